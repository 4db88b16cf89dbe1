//! `logpipe ready`: asks a running logpipe whether it is ready (`/ready`)
//! and exits 0 when it is. The container image's HEALTHCHECK and any
//! supervisor without curl use it; the image has no shell or curl.

use std::process::ExitCode;

use anyhow::{Context, Result};
use logpipe_config::Config;

use crate::args::ReadyArgs;

pub(crate) async fn run(args: ReadyArgs) -> Result<ExitCode> {
    let (url, own) = match args.url {
        Some(url) => (url, false),
        None => (own_ready_url(&args.config.load()?), true),
    };
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        // This process's own listener on loopback: its certificate may be
        // a private one the probe has no CA for, and the question is only
        // whether the process answers.
        .danger_accept_invalid_certs(own)
        .build()
        .context("cannot make an HTTP client")?;
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("not ready: no answer from {url}: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        if !args.quiet {
            println!("ready: {url}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("not ready: {url} answered {status}: {}", body.trim());
        Ok(ExitCode::FAILURE)
    }
}

/// `/ready` of the process `config` describes, reached on loopback when it
/// listens on every address.
fn own_ready_url(config: &Config) -> String {
    let scheme = if config.tls.files().is_some() {
        "https"
    } else {
        "http"
    };
    let listen = match config.listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() => {
            let loopback: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(loopback, addr.port()).to_string()
        }
        _ => config.listen.clone(),
    };
    format!("{scheme}://{listen}{}", logpipe_core::api::READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_asked_on_loopback() {
        let mut config = Config::default();
        assert_eq!(own_ready_url(&config), "http://127.0.0.1:8081/ready");
        config.listen = "0.0.0.0:9000".to_string();
        assert_eq!(own_ready_url(&config), "http://127.0.0.1:9000/ready");
        config.listen = "[::]:9000".to_string();
        assert_eq!(own_ready_url(&config), "http://[::1]:9000/ready");
        config.listen = "10.1.2.3:8081".to_string();
        assert_eq!(own_ready_url(&config), "http://10.1.2.3:8081/ready");
    }
}
