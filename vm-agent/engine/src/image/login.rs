//! Checking credentials against a registry before `login` stores them.

use super::auth::Credentials;
use super::registries::RegistriesConf;
use crate::engine::EngineError;
use crate::registry::{RegistryClient, Repo};

/// Succeeds when `registry` accepts `creds`.
pub async fn check_login(
    registry: &str,
    creds: Credentials,
    tls_verify: Option<bool>,
) -> Result<(), EngineError> {
    let conf = RegistriesConf::load()?;
    let host = registry.split('/').next().unwrap_or(registry);
    let insecure = match tls_verify {
        Some(v) => !v,
        None => conf.is_insecure(host),
    };
    let client = RegistryClient::new(Box::new(|_| None));
    let repo = Repo {
        registry: host.to_string(),
        repository: String::new(),
        insecure,
    };
    client.check_login(&repo, creds).await?;
    Ok(())
}
