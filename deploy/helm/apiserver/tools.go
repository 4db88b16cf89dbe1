//go:build tools

// Package tools pins kube-apiserver (k8s.io/kubernetes) in this module's
// go.mod; apiserver.sh builds the command itself.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"
