//! `cargo xtask plugins`: builds the plugin workspace (`plugins/`) and installs
//! each component with its manifest where the server and the tests load them.
//!
//! Every directory of `plugins/` with a `Cargo.toml` is a plugin, named after
//! its directory; its manifest is `plugins/<name>/<name>.toml`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target the plugins are built for.
const TARGET: &str = "wasm32-wasip2";

/// Plugins that exist for the integration tests: installed in
/// `target/test-plugins/` only, never beside the examples.
const TEST_ONLY: &[&str] = &[
    "probe",
    "counter",
    "http_probe",
    "kvprobe",
    "broadcast",
    "legacy_chat",
];

/// Second versions of plugins, for the hot-swap tests: `(crate, plugin)`.
/// Installed as `target/test-plugins/v2/<plugin>.wasm`, so a test can copy
/// them over the first version.
const SECOND_VERSIONS: &[(&str, &str)] = &[("chat_v2", "chat"), ("counter_v2", "counter")];

/// Example plugins installed a second time under another name, with the
/// manifest `plugins/<crate>/<name>.toml`: `(crate, name)`. `echo_shared`
/// is the echo component on one shared instance (`instance = "shared"`).
const ALIASES: &[(&str, &str)] = &[("echo", "echo_shared")];

/// Directories of `plugins/` that are libraries, not plugins: the Rust SDK.
const LIBRARIES: &[&str] = &["sdk"];

/// Variables that the outer cargo (or the shell) sets for the root workspace
/// and that must not reach the plugin build: host rustflags, wrappers, and
/// the xtask package's own metadata.
const LEAKY_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_MAKEFLAGS",
];

/// Where the example plugins are installed (what `cargo xtask serve` serves).
pub(crate) fn example_dir(root: &Path) -> PathBuf {
    root.join("target").join("plugins")
}

/// Where all plugins, test-only ones included, are installed for the tests.
pub(crate) fn test_dir(root: &Path) -> PathBuf {
    root.join("target").join("test-plugins")
}

/// `cargo <args>` in `plugins/`, with the outer build's environment cleared
/// and the plugins' own target and target directory pinned.
pub(crate) fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut command = crate::cargo();
    command.current_dir(root.join("plugins")).args(args);
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|name| name.starts_with("CARGO_PKG_"))
        {
            command.env_remove(name);
        }
    }
    for name in LEAKY_VARS {
        command.env_remove(name);
    }
    command
        .env("CARGO_BUILD_TARGET", TARGET)
        .env("CARGO_TARGET_DIR", root.join("plugins").join("target"));
    command
}

/// Builds the plugins and installs them in `target/plugins/` (examples) and
/// `target/test-plugins/` (all).
pub(crate) fn install(root: &Path) -> Result<()> {
    ensure_target()?;
    println!("xtask: cargo build --release (plugins/)");
    crate::run(&mut cargo(root, &["build", "--release"])).context("building the plugins failed")?;

    let plugins = root.join("plugins");
    let built = plugins.join("target").join(TARGET).join("release");
    for name in plugin_names(&plugins)? {
        // Cargo names a cdylib after its crate, with `-` turned into `_`.
        let wasm = built.join(format!("{}.wasm", name.replace('-', "_")));
        if !wasm.is_file() {
            bail!(
                "{} was not built; is {name} a member of plugins/Cargo.toml?",
                wasm.display()
            );
        }
        let manifest = plugins.join(&name).join(format!("{name}.toml"));
        let manifest = manifest.is_file().then_some(manifest);
        let size = fs::metadata(&wasm)?.len();

        let second_version = SECOND_VERSIONS.iter().find(|(krate, _)| *krate == name);
        let (dirs, installed) = match second_version {
            Some((_, plugin)) => (vec![test_dir(root).join("v2")], (*plugin).to_owned()),
            None if TEST_ONLY.contains(&name.as_str()) => (vec![test_dir(root)], name.clone()),
            None => (vec![example_dir(root), test_dir(root)], name.clone()),
        };
        for dir in &dirs {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            // The manifest first: a server watching `dir` loads a new
            // component together with the manifest beside it.
            let toml = dir.join(format!("{installed}.toml"));
            match &manifest {
                Some(manifest) => replace(manifest, &toml)?,
                None => remove(&toml)?,
            }
            replace(&wasm, &dir.join(format!("{installed}.wasm")))?;
        }
        let dirs: Vec<String> = dirs.iter().map(|dir| relative(root, dir)).collect();
        println!(
            "xtask: {name}.wasm ({size} bytes) -> {} as {installed}.wasm",
            dirs.join(", ")
        );
        for (_, alias) in ALIASES.iter().filter(|(krate, _)| *krate == name) {
            let manifest = plugins.join(&name).join(format!("{alias}.toml"));
            for dir in [example_dir(root), test_dir(root)] {
                replace(&manifest, &dir.join(format!("{alias}.toml")))?;
                replace(&wasm, &dir.join(format!("{alias}.wasm")))?;
            }
            println!("xtask: {name}.wasm -> target/plugins, target/test-plugins as {alias}.wasm");
        }
    }
    crate::sdk_plugins::install(root)
}

/// Installs the `wasm32-wasip2` target with rustup when it is missing.
fn ensure_target() -> Result<()> {
    let output = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "rustup not found: the plugins need the Rust target {TARGET}; \
             install rustup (https://rustup.rs) or add that target to your toolchain"
        ),
        Err(err) => return Err(err).context("cannot run rustup"),
    };
    if !output.status.success() {
        bail!(
            "`rustup target list --installed` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    println!("xtask: rustup target add {TARGET}");
    crate::run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// The plugins: the directories of `plugins/` that hold a `Cargo.toml`
/// (the [`LIBRARIES`] aside), sorted.
fn plugin_names(plugins: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        fs::read_dir(plugins).with_context(|| format!("cannot read {}", plugins.display()))?
    {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file() {
            let name = path.file_name().and_then(|name| name.to_str());
            let name = name.context("plugin directory names must be UTF-8")?;
            if !LIBRARIES.contains(&name) {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Copies `from` over `to` through a temporary file and a rename, so that a
/// server watching the directory never reads a partial file. Leaves `to`
/// alone when it already has the same contents (no needless reload).
pub(crate) fn replace(from: &Path, to: &Path) -> Result<()> {
    let contents = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    if fs::read(to).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    let file_name = to.file_name().context("destination has no file name")?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(".tmp");
    let temp = to.with_file_name(temp_name);
    fs::write(&temp, &contents).with_context(|| format!("cannot write {}", temp.display()))?;
    fs::rename(&temp, to)
        .with_context(|| format!("cannot rename {} to {}", temp.display(), to.display()))
}

/// Removes `path` if it exists.
fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// `path` relative to the repository root, for messages.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
