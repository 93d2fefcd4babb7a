//! `floodway token`: makes a new bearer token and prints it with the configuration entry
//! that lets `floodway serve` accept it. The server stores only the hash, so this is the one
//! time the token is shown.

use floodway_server::Scope;
use floodway_server::auth::{QueuePattern, generate_token, hash_token};
use serde::Serialize;

use crate::exit::bad_input;
use crate::output;

/// `floodway token`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A name for the token, shown in the server's logs.
    #[arg(long, default_value = "default")]
    name: String,
    /// What the token may do: produce, consume, admin (repeatable).
    #[arg(long = "scope", value_enum, required = true)]
    scopes: Vec<ScopeArg>,
    /// The queues it may do it on: names or patterns with * (repeatable; every queue by
    /// default).
    #[arg(long = "queue", value_name = "PATTERN", default_value = "*")]
    queues: Vec<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ScopeArg {
    Produce,
    Consume,
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Produce => Scope::Produce,
            ScopeArg::Consume => Scope::Consume,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

#[derive(Serialize)]
struct TokenView {
    token: String,
    hash: String,
    config: String,
}

/// Runs `floodway token`.
pub(crate) async fn run(json: bool, args: Args) -> anyhow::Result<()> {
    for pattern in &args.queues {
        QueuePattern::new(pattern).map_err(bad_input)?;
    }
    if args.name.is_empty() || args.name.contains(['"', '\\', '\n']) {
        return Err(bad_input(
            "the token name must be non-empty and free of quotes and backslashes",
        ));
    }
    let token = generate_token()
        .map_err(|error| anyhow::anyhow!("the system's random source failed: {error}"))?;
    let hash = hash_token(&token);
    let list = |items: Vec<String>| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scopes = args
        .scopes
        .iter()
        .map(|s| Scope::from(*s).as_str().to_owned())
        .collect();
    let config = format!(
        "[[tokens]]\nname = {:?}\nhash = {hash:?}\nscopes = [{}]\nqueues = [{}]\n",
        args.name,
        list(scopes),
        list(args.queues.clone())
    );
    if json {
        return output::print_json(&TokenView {
            token,
            hash,
            config,
        });
    }
    output::print(format!(
        "{token}\n\n# The token above is shown once; floodway keeps only its hash. Add this to \
         the server's configuration file:\n{config}"
    ))
}
