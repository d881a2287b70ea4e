//! The machine's SSH key pair (ed25519, OpenSSH format), made at `machine init`; the
//! public half is installed in the guest by the agent on every start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::MachineError;

pub fn generate(private: &Path, name: &str) -> Result<(), MachineError> {
    let err =
        |e: String| MachineError::Invalid(format!("making the ssh key {}: {e}", private.display()));
    let mut key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(|e| err(e.to_string()))?;
    key.set_comment(format!("capsa-machine-{name}"));
    let text = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| err(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| err(e.to_string()))?;
    fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(private)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| err(e.to_string()))?;
    let mut pubpath = private.as_os_str().to_owned();
    pubpath.push(".pub");
    fs::write(&pubpath, format!("{public}\n")).map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_an_openssh_pair() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("id_ed25519");
        generate(&p, "m1").unwrap();
        let private = fs::read_to_string(&p).unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let public = fs::read_to_string(d.path().join("id_ed25519.pub")).unwrap();
        assert!(public.starts_with("ssh-ed25519 AAAA"), "{public}");
        assert!(public.trim_end().ends_with("capsa-machine-m1"));
    }
}
