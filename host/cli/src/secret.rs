//! `berth secret set|list|delete`: the secrets apps name in their
//! `secrets` table. Values go to the server and never come back.

use std::io::Read as _;
use std::path::PathBuf;

use super::client::{AdminArgs, AdminClient, block_on, print_json, print_table, write_stdout};
use berth::api::{SecretList, SecretView};

/// `berth secret` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret: its value from `--file`, else from stdin (one trailing
    /// newline dropped, so `echo value |` works).
    Set(SetArgs),
    /// List the secrets: names, update times and the apps using them.
    List(ListArgs),
    /// Delete a secret no app names.
    Delete(DeleteArgs),
}

/// Arguments of `berth secret set`.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The secret's name (`[A-Za-z0-9_.-]`, at most 128).
    pub name: String,
    /// Read the value from this file, byte for byte.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `berth secret list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `berth secret delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The secret.
    pub name: String,
    /// The admin API.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `berth secret` subcommand.
///
/// # Errors
/// An unreadable value, a name or value the server refuses, a secret still
/// in use, or the server unreachable.
pub fn run(cmd: SecretCommand) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set(args) => set(args),
        SecretCommand::List(args) => list(args),
        SecretCommand::Delete(args) => delete(args),
    }
}

fn set(args: SetArgs) -> anyhow::Result<()> {
    berth::secrets::validate_name(&args.name)?;
    let value = match &args.file {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read `{}`: {e}", path.display()))?,
        None => {
            let mut v = Vec::new();
            std::io::stdin()
                .take(berth::secrets::MAX_VALUE_BYTES as u64 + 2)
                .read_to_end(&mut v)?;
            if v.ends_with(b"\n") {
                v.pop();
                if v.ends_with(b"\r") {
                    v.pop();
                }
            }
            v
        }
    };
    block_on(async move {
        let client = AdminClient::new(&args.admin)?;
        let (status, info): (_, Option<SecretView>) = client
            .put_bytes(&format!("/v1/secrets/{}", args.name), value)
            .await?;
        if args.json {
            return print_json(&info);
        }
        let verb = if status == http::StatusCode::CREATED {
            "created"
        } else {
            "updated"
        };
        write_stdout(format!("{verb} secret {}\n", args.name).as_bytes())
    })
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    block_on(async move {
        let client = AdminClient::new(&args.admin)?;
        let list: SecretList = client.get("/v1/secrets").await?;
        if args.json {
            return print_json(&list);
        }
        let rows: Vec<Vec<String>> = list
            .secrets
            .into_iter()
            .map(|s| {
                let used = if s.used_by.is_empty() {
                    "-".to_string()
                } else {
                    s.used_by.join(",")
                };
                vec![s.name, s.updated_at, used]
            })
            .collect();
        print_table(&["NAME", "UPDATED", "USED BY"], &rows)
    })
}

fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    berth::secrets::validate_name(&args.name)?;
    block_on(async move {
        let client = AdminClient::new(&args.admin)?;
        client.delete(&format!("/v1/secrets/{}", args.name)).await?;
        if args.json {
            print_json(&serde_json::json!({ "deleted": args.name }))
        } else {
            write_stdout(format!("deleted secret {}\n", args.name).as_bytes())
        }
    })
}
