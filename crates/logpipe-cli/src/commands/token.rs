//! `logpipe token`: a new API token and the `[[auth.tokens]]` entry that
//! lets it in. The token is printed once; the configuration keeps only its
//! SHA-256.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::args::TokenArgs;

pub(crate) fn run(args: TokenArgs) -> Result<ExitCode> {
    for scope in &args.scopes {
        if !["ingest", "query", "admin"].contains(&scope.as_str()) {
            bail!("unknown scope {scope:?}: use ingest, query and/or admin");
        }
    }
    let token = logpipe_http::auth::new_token().context("cannot read /dev/urandom")?;
    let scopes: Vec<String> = args.scopes.iter().map(|s| format!("{s:?}")).collect();
    eprintln!(
        "the token (give it to {}; it is not shown again):",
        args.name
    );
    println!("{token}");
    eprintln!(
        "\nadd to logpipe.toml:\n\n[[auth.tokens]]\nname = {:?}\nscopes = [{}]\nsha256 = \"{}\"",
        args.name,
        scopes.join(", "),
        logpipe_http::auth::hash_hex(&token)
    );
    Ok(ExitCode::SUCCESS)
}
