//! What the integration tests of capsa-core share.

use std::path::PathBuf;

/// The capsa-agent built next to the test binary (`CAPSA_AGENT_BIN` overrides).
pub fn agent_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("CAPSA_AGENT_BIN") {
        return Some(PathBuf::from(path));
    }
    // target/<profile>/deps/TEST-HASH → target/<profile>/capsa-agent
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("capsa-agent");
    path.exists().then_some(path)
}
