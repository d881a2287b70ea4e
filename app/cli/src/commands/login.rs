//! `login` and `logout`: credentials in auth.json, checked against the registry first.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use capsa_engine::image::auth::{self, Credentials};

use crate::cli::{Global, LoginArgs, LogoutArgs};

/// The auth.json key for what the user typed: a host, optionally with a namespace.
fn registry_key(input: &str) -> String {
    let s = input
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let s = s
        .strip_suffix("/v1")
        .or_else(|| s.strip_suffix("/v2"))
        .unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_string(),
    }
}

fn prompt(label: &str, echo: bool) -> Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to prompt on: pass --username and --password or --password-stdin")?;
    write!(tty, "{label}")?;
    tty.flush()?;
    let old = (!echo).then(|| set_echo(&tty, false)).flatten();
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    if let Some(old) = old {
        restore(&tty, old);
        writeln!(tty)?;
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn set_echo(tty: &std::fs::File, on: bool) -> Option<libc::termios> {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(tty.as_raw_fd(), &mut t) != 0 {
            return None;
        }
        let old = t;
        if on {
            t.c_lflag |= libc::ECHO;
        } else {
            t.c_lflag &= !libc::ECHO;
        }
        libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t);
        Some(old)
    }
}

fn restore(tty: &std::fs::File, old: libc::termios) {
    use std::os::fd::AsRawFd;
    // SAFETY: restoring attributes read from the same fd.
    unsafe { libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &old) };
}

fn auth_file(given: Option<std::path::PathBuf>) -> std::path::PathBuf {
    given.unwrap_or_else(auth::default_auth_file)
}

pub async fn login(_g: &Global, a: LoginArgs) -> Result<()> {
    let registry = match &a.registry {
        Some(r) => registry_key(r),
        None => capsa_engine::image::registries::RegistriesConf::load()?
            .unqualified_search_registries
            .first()
            .cloned()
            .context("no registry given and no unqualified-search registries configured: name one, as in `capsa login localhost:5000`")?,
    };
    let path = auth_file(a.authfile.clone());
    if a.get_login {
        return match auth::lookup(Some(&path), &registry)? {
            Some(c) => {
                println!("{}", c.username);
                Ok(())
            }
            None => bail!("not logged into {registry}"),
        };
    }
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let username = match a.username.clone() {
        Some(u) => u,
        None => prompt("Username: ", true)?,
    };
    let password = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = a.password.clone() {
        p
    } else if std::io::stdin().is_terminal() {
        prompt("Password: ", false)?
    } else {
        bail!("no password given: pass --password or --password-stdin");
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    let creds = Credentials { username, password };
    capsa_engine::image::login::check_login(&registry, creds.clone(), a.tls.tls_verify).await?;
    auth::store(&path, &registry, &creds)
        .with_context(|| format!("saving credentials to {}", path.display()))?;
    println!("Login Succeeded!");
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<()> {
    let path = auth_file(a.authfile.clone());
    if a.all {
        auth::remove_all(&path)?;
        println!("Removed login credentials for all registries");
        return Ok(());
    }
    let Some(r) = &a.registry else {
        bail!("a registry must be given, or --all");
    };
    let key = registry_key(r);
    if auth::remove(&path, &key)? {
        println!("Removed login credentials for {key}");
        Ok(())
    } else {
        bail!("not logged into {key}")
    }
}
