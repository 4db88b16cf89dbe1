// etcd for the chart's server-side test: the etcd server's own main, built
// from go.etcd.io/etcd/server/v3 at the version kube-apiserver's client
// speaks (the etcd module that holds upstream's main has replace directives,
// so `go install` cannot build it).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
