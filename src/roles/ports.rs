//! The ports file (`portsFile`, `--ports-file`): the addresses a process bound, as JSON
//! (`{"admin": "127.0.0.1:9090", "smtp": "127.0.0.1:2525"}`), for scripts and tests that
//! let the system pick ports. Written again as more sockets are bound, each time whole
//! (through a rename), so that a reader never sees half a file.

use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub struct PortsFile {
    path: Option<PathBuf>,
    bound: BTreeMap<String, SocketAddr>,
}

impl PortsFile {
    /// Writes the admin address, if both a file and an admin listener are configured.
    pub fn new(path: Option<PathBuf>, admin: Option<SocketAddr>) -> anyhow::Result<Self> {
        let mut file = PortsFile {
            path,
            bound: BTreeMap::new(),
        };
        if let Some(admin) = admin {
            file.bound.insert("admin".into(), admin);
        }
        file.write()?;
        Ok(file)
    }

    pub fn add(&mut self, bound: &[(String, SocketAddr)]) -> anyhow::Result<()> {
        self.bound.extend(bound.iter().cloned());
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let temporary = path.with_extension("tmp");
        let json = serde_json::to_string(&self.bound)?;
        std::fs::write(&temporary, json)
            .and_then(|()| std::fs::rename(&temporary, path))
            .with_context(|| format!("writing the ports file {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_grows_as_sockets_are_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.json");
        let read = || -> BTreeMap<String, String> {
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        let admin: SocketAddr = "127.0.0.1:9090".parse().unwrap();
        let mut file = PortsFile::new(Some(path.clone()), Some(admin)).unwrap();
        assert_eq!(
            read().get("admin").map(String::as_str),
            Some("127.0.0.1:9090")
        );
        assert_eq!(read().len(), 1);
        file.add(&[("smtp".into(), "127.0.0.1:2525".parse().unwrap())])
            .unwrap();
        assert_eq!(
            read().get("smtp").map(String::as_str),
            Some("127.0.0.1:2525")
        );
        assert_eq!(read().len(), 2);
        assert!(!path.with_extension("tmp").exists());
    }
}
