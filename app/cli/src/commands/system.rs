//! `capsa system connection add|ls|rm|default|rename`: the named engines a command can
//! use instead of the local one (app/core `connection`), with podman's flags, columns
//! and messages.

use std::path::PathBuf;

use anyhow::{Context, Result};
use capsa_core::connection::{self, Connections};
use clap::{Args, Subcommand};

use crate::output::{self, Column, Format};

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Manage remote engine destinations
    #[command(subcommand)]
    Connection(ConnectionCommand),
}

#[derive(Subcommand, Debug)]
pub enum ConnectionCommand {
    /// Record a destination to reach an engine at
    Add(AddArgs),
    /// List destinations
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Delete a named destination
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Set the named destination as the default
    Default(NameArgs),
    /// Rename "old" to "new"
    Rename(RenameArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    pub name: String,
    /// [ssh://][USER@]HOST[:PORT] (the engine's agent over SSH) or unix:///PATH (an agent socket)
    pub destination: String,
    /// Set the connection as the default
    #[arg(short, long)]
    pub default: bool,
    /// Path to the SSH identity file
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// SSH port number for the destination
    #[arg(short, long)]
    pub port: Option<u16>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Format the output as json or with a Go template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Print only the names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove every connection
    #[arg(short, long)]
    pub all: bool,
    #[arg(required_unless_present = "all")]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub old: String,
    pub new: String,
}

fn path() -> Result<PathBuf> {
    Connections::default_path().context("no home directory: set CAPSA_CONNECTIONS_FILE")
}

pub fn run(cmd: SystemCommand) -> Result<()> {
    let SystemCommand::Connection(c) = cmd;
    let p = path()?;
    match c {
        ConnectionCommand::Add(a) => {
            let d = connection::parse_destination(&a.destination, a.port, a.identity.as_deref())?;
            Connections::update(&p, |c| c.add(&a.name, d, a.default))?;
        }
        ConnectionCommand::Ls(a) => ls(&Connections::load(&p)?, a)?,
        ConnectionCommand::Rm(a) => Connections::update(&p, |c| match &a.name {
            _ if a.all => {
                *c = Connections::default();
                Ok(())
            }
            Some(n) => c.remove(n),
            None => Ok(()),
        })?,
        ConnectionCommand::Default(a) => Connections::update(&p, |c| c.set_default(&a.name))?,
        ConnectionCommand::Rename(a) => Connections::update(&p, |c| c.rename(&a.old, &a.new))?,
    }
    Ok(())
}

fn ls(c: &Connections, a: LsArgs) -> Result<()> {
    if a.quiet {
        for name in c.map.keys() {
            println!("{name}");
        }
        return Ok(());
    }
    // A struct, not json!, so the fields keep podman's order in --format json.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Row<'a> {
        name: &'a str,
        #[serde(rename = "URI")]
        uri: &'a str,
        identity: &'a str,
        is_machine: bool,
        default: bool,
    }
    let rows: Vec<Row> = c
        .map
        .iter()
        .map(|(name, d)| Row {
            name,
            uri: &d.uri,
            identity: &d.identity,
            is_machine: d.is_machine,
            default: *name == c.default,
        })
        .collect();
    let docs = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<Vec<_>, _>>()?;
    let cols = vec![
        Column {
            header: "Name",
            field: "Name",
        },
        Column {
            header: "URI",
            field: "URI",
        },
        Column {
            header: "Identity",
            field: "Identity",
        },
        Column {
            header: "Default",
            field: "Default",
        },
    ];
    let format = Format::parse(a.format.as_deref(), cols);
    match format {
        // to_value sorted the keys; print the structs themselves.
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            Ok(())
        }
        f => output::print(&f, &docs, &serde_json::Value::Null, false),
    }
}
