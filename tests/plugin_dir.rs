//! A private plugin directory for the hot-swap tests: copies of the built
//! test plugins, changed the way an operator would (write under a hidden
//! name, then rename into place).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::test_plugins_dir;

/// Which build of a plugin to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// `target/test-plugins/<name>.wasm`
    V1,
    /// `target/test-plugins/v2/<name>.wasm`: the tagged second version.
    V2,
}

/// A temporary plugin directory, removed on drop.
#[derive(Debug)]
pub struct PluginDir {
    path: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl PluginDir {
    /// An empty directory under `target/test-tmp/`.
    pub fn new() -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/test-tmp/plugins-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a plugin directory");
        Self { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn source(name: &str, build: Build) -> PathBuf {
        match build {
            Build::V1 => test_plugins_dir().join(format!("{name}.wasm")),
            Build::V2 => test_plugins_dir().join("v2").join(format!("{name}.wasm")),
        }
    }

    /// Install `name` from `build` with `manifest` as its manifest: both
    /// written under hidden names, then renamed into place, manifest first.
    pub fn install(&self, name: &str, build: Build, manifest: &str) {
        self.write(&format!("{name}.toml"), manifest.as_bytes());
        let wasm = std::fs::read(Self::source(name, build)).expect("read a built plugin");
        self.write(&format!("{name}.wasm"), &wasm);
    }

    /// Atomically replace `file` with `bytes`.
    pub fn write(&self, file: &str, bytes: &[u8]) {
        let hidden = self.path.join(format!(".{file}.tmp"));
        std::fs::write(&hidden, bytes).expect("write a hidden file");
        std::fs::rename(&hidden, self.path.join(file)).expect("rename into place");
    }

    /// Remove `name`'s component (its manifest stays, as an operator might
    /// leave it).
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(format!("{name}.wasm"))).expect("remove a plugin");
    }
}

impl Default for PluginDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
