//! HTTPS on the listener (`[tls]`): certificates made with the openssl
//! command line, the built-in generator and `logpipe generate` posting over
//! HTTPS, plain HTTP refused, and a new certificate taken on SIGHUP.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Running, binary, stdout_of};

/// A self-signed certificate for 127.0.0.1 and its key, as `NAME.pem` and
/// `NAME.key` in `dir`.
fn certificate(dir: &Path, name: &str) {
    stdout_of(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(dir.join(format!("{name}.key")))
            .arg("-out")
            .arg(dir.join(format!("{name}.pem")))
            .args([
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                // A server certificate, not a CA (rustls refuses a CA as one).
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-addext",
                "extendedKeyUsage=serverAuth",
            ]),
        "openssl req (Debian's openssl makes the test certificates)",
    );
}

/// A client trusting only the certificate `pem`.
fn client_trusting(pem: &Path) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(&std::fs::read(pem).unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_the_listener_with_a_certificate_taken_again_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    certificate(&tls, "first");
    certificate(&tls, "second");
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    std::fs::copy(tls.join("first.pem"), &cert).unwrap();
    std::fs::copy(tls.join("first.key"), &key).unwrap();
    let (cert_env, key_env) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let first_env = tls.join("first.pem");
    let env = [
        ("LOGPIPE__TLS__CERT_FILE", cert_env),
        ("LOGPIPE__TLS__KEY_FILE", key_env),
        ("LOGPIPE__TLS__RELOAD_INTERVAL", "1h"),
        // The built-in generator posts to this process over HTTPS.
        ("LOGPIPE__TLS__CA_FILE", first_env.to_str().unwrap()),
        ("LOGPIPE__WINDOWS__ENABLED", "false"),
    ];
    let data = dir.path().join("data");
    let running = Running::start_role(&["up", "--listen", "127.0.0.1:0"], &data, &env);
    let url = running.base_url.clone();
    assert!(url.starts_with("https://"), "{url}");

    // HTTPS with the certificate trusted; plain HTTP and an untrusting
    // client get nothing.
    let first = client_trusting(&tls.join("first.pem"));
    let health = first.get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        reqwest::get(format!("{plain}/health")).await.is_err(),
        "plain HTTP was answered"
    );
    let second = client_trusting(&tls.join("second.pem"));
    assert!(second.get(format!("{url}/health")).send().await.is_err());

    // `logpipe generate` over HTTPS, trusting the certificate by --ca-file.
    stdout_of(
        Command::new(binary())
            .args(["generate", "--count", "2000", "--target", &url, "--ca-file"])
            .arg(tls.join("first.pem")),
        "logpipe generate --ca-file",
    );

    // A new certificate in place of the old one, taken on SIGHUP.
    std::fs::copy(tls.join("second.key"), &key).unwrap();
    std::fs::copy(tls.join("second.pem"), &cert).unwrap();
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.get(format!("{url}/health")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not load the new certificate:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A new connection (the old client's pooled one keeps its session).
    let first_again = client_trusting(&tls.join("first.pem"));
    assert!(
        first_again
            .get(format!("{url}/health"))
            .send()
            .await
            .is_err(),
        "the old certificate is still served to new connections"
    );

    // The generated records and the built-in generator's reached the lake.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats: Value = second
            .get(format!("{url}/api/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if stats["lake_rows"].as_u64().unwrap_or(0) > 2000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lake did not grow past 2000 rows: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.terminate().success());

    // Without a signal: a changed pair is taken at the next check.
    let quick = [
        ("LOGPIPE__TLS__CERT_FILE", cert_env),
        ("LOGPIPE__TLS__KEY_FILE", key_env),
        ("LOGPIPE__TLS__RELOAD_INTERVAL", "1s"),
    ];
    let running = Running::start_role(
        &["up", "--no-generator", "--listen", "127.0.0.1:0"],
        &data,
        &quick,
    );
    let url = running.base_url.clone();
    assert!(
        client_trusting(&tls.join("second.pem"))
            .get(format!("{url}/health"))
            .send()
            .await
            .is_ok()
    );
    std::fs::copy(tls.join("first.key"), &key).unwrap();
    std::fs::copy(tls.join("first.pem"), &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client_trusting(&tls.join("first.pem"))
        .get(format!("{url}/health"))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the changed files were not loaded:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.terminate().success());
}

#[test]
fn a_certificate_without_its_key_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "one");
    certificate(dir.path(), "two");
    let (one, two) = (dir.path().join("one.pem"), dir.path().join("two.key"));
    let data = dir.path().join("data");
    let stderr = crate::common::up_refused(
        &data,
        &[],
        &[
            ("LOGPIPE__TLS__CERT_FILE", one.to_str().unwrap()),
            ("LOGPIPE__TLS__KEY_FILE", two.to_str().unwrap()),
        ],
    );
    assert!(
        stderr.contains("two.key") && stderr.contains("does not go with"),
        "{stderr}"
    );
    let stderr = crate::common::up_refused(
        &data,
        &[],
        &[("LOGPIPE__TLS__CERT_FILE", one.to_str().unwrap())],
    );
    assert!(stderr.contains("tls.key_file"), "{stderr}");
}

/// An HTTPS receiver (Python's http.server wrapped in ssl): appends each
/// POSTed body as a line to `out`; returns its process and port.
const RECEIVER: &str = r#"
import http.server, ssl, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        with open(sys.argv[3], "ab") as out:
            out.write(body + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The alert webhook posts over HTTPS to a receiver whose certificate
/// `tls.ca_file` trusts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_webhook_posts_over_https_trusting_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "hook");
    let received = dir.path().join("received.ndjson");
    let mut receiver = Killed(
        Command::new("python3")
            .args(["-c", RECEIVER])
            .arg(dir.path().join("hook.pem"))
            .arg(dir.path().join("hook.key"))
            .arg(&received)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(receiver.0.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let webhook = format!("https://127.0.0.1:{}/api/v2/alerts", port.trim());
    let ca = dir.path().join("hook.pem");
    let running = Running::start(
        &dir.path().join("data"),
        &[
            ("LOGPIPE__WINDOWS__SIZE", "1s"),
            ("LOGPIPE__WINDOWS__ALLOWED_LATENESS", "1s"),
            ("LOGPIPE__ALERTS__WEBHOOK_URL", &webhook),
            ("LOGPIPE__TLS__CA_FILE", ca.to_str().unwrap()),
        ],
    );
    // Half of the logs are errors: HighErrorRate fires within seconds.
    stdout_of(
        Command::new(binary())
            .args([
                "generate",
                "--target",
                &running.base_url,
                "--count",
                "3000",
                "--rate",
                "500",
            ])
            .args(["--batch-size", "50", "--error-rate", "0.5"]),
        "logpipe generate",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        let firing = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .flat_map(|body| body.as_array().cloned().unwrap_or_default())
            .any(|alert| alert["labels"]["alertname"] == "HighErrorRate");
        if firing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert reached the HTTPS webhook:\n{}",
            running.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(running.terminate().success());
}

/// A child process killed when dropped (also when the test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
