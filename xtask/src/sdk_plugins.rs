//! The Python and JavaScript example plugins (`plugins/chat_py`,
//! `plugins/chat_js`), built with the SDKs in `sdk/` by componentize-py and
//! componentize-js, as part of `cargo xtask plugins`.
//!
//! The toolchains install from their registries at pinned versions into
//! `target/sdk-tools/venv` (pip, `sdk/python/requirements-dev.txt`, with
//! pytest and websockets for the Python harness) and
//! `sdk/js/node_modules` (`npm ci`, `sdk/js/package-lock.json`). Each
//! component is cached in `target/sdk-cache/` under the SHA-256 of its
//! inputs (the WIT, the SDK, the plugin's sources and the lock files), so a
//! repeat build with nothing changed copies the cached file. The examples go
//! to `target/plugins/` and, for the tests, to `target/test-plugins/sdk/`:
//! apart from the Rust test plugins, so the servers of the other tests do not
//! load two large interpreted components each.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::plugins::{example_dir, replace, test_dir};

/// The language a plugin is written in, and so the toolchain that builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Python,
    JavaScript,
}

/// An interpreted example plugin: `plugins/<name>/` with `<name>.toml`.
struct SdkPlugin {
    name: &'static str,
    lang: Lang,
    /// The entry point inside `plugins/<name>/`: the Python module name
    /// or the JavaScript file.
    entry: &'static str,
}

const SDK_PLUGINS: &[SdkPlugin] = &[
    SdkPlugin {
        name: "chat_py",
        lang: Lang::Python,
        entry: "app",
    },
    SdkPlugin {
        name: "chat_js",
        lang: Lang::JavaScript,
        entry: "chat.js",
    },
];

/// Where the SDK examples are installed for the tests.
pub(crate) fn test_sdk_dir(root: &Path) -> PathBuf {
    test_dir(root).join("sdk")
}

/// Builds (or takes from the cache) every SDK example and installs it.
pub(crate) fn install(root: &Path) -> Result<()> {
    let mut python = None;
    let mut js = None;
    for plugin in SDK_PLUGINS {
        let source = root.join("plugins").join(plugin.name);
        let hash = input_hash(root, plugin)?;
        let cache = root.join("target").join("sdk-cache");
        fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
        let cached = cache.join(format!("{}-{}.wasm", plugin.name, &hash[..16]));
        if cached.is_file() {
            println!("xtask: {} is up to date (cached)", plugin.name);
        } else {
            let started = Instant::now();
            let temp = cache.join(format!(".{}.wasm.tmp", plugin.name));
            let mut command = match plugin.lang {
                Lang::Python => {
                    let tool = match &python {
                        Some(tool) => tool,
                        None => python.insert(python_tool(root)?),
                    };
                    let mut command = Command::new(tool);
                    command
                        .current_dir(root)
                        .args(["-d", "wit", "-w", "consumer", "componentize", "-p"])
                        .arg(&source)
                        .arg("-p")
                        .arg(root.join("sdk").join("python"))
                        .arg(plugin.entry)
                        .arg("-o")
                        .arg(&temp);
                    command
                }
                Lang::JavaScript => {
                    crate::js_wit_version::check(root)?;
                    let tool = match &js {
                        Some(tool) => tool,
                        None => js.insert(js_tool(root)?),
                    };
                    let mut command = Command::new(tool);
                    command
                        .current_dir(root)
                        .args(["--wit", "wit", "--world-name", "consumer"])
                        // Without `-d http` the component imports
                        // wasi:http/types, which consumers are not given.
                        .args(["-d", "http", "fetch-event", "-o"])
                        .arg(&temp)
                        .arg(source.join(plugin.entry));
                    command
                }
            };
            println!("xtask: building {} ({:?})", plugin.name, plugin.lang);
            crate::run(&mut command).with_context(|| format!("building {} failed", plugin.name))?;
            fs::rename(&temp, &cached)
                .with_context(|| format!("cannot rename {} into place", temp.display()))?;
            prune(&cache, plugin.name, &cached)?;
            println!(
                "xtask: built {} in {:.1} s",
                plugin.name,
                started.elapsed().as_secs_f64()
            );
        }
        let size = fs::metadata(&cached)?.len();
        let manifest = source.join(format!("{}.toml", plugin.name));
        for dir in [example_dir(root), test_sdk_dir(root)] {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            replace(&manifest, &dir.join(format!("{}.toml", plugin.name)))?;
            replace(&cached, &dir.join(format!("{}.wasm", plugin.name)))?;
        }
        println!(
            "xtask: {}.wasm ({size} bytes) -> target/plugins, target/test-plugins/sdk",
            plugin.name
        );
    }
    Ok(())
}

/// Removes the cached builds of `name` other than `keep`, so the cache
/// holds one component per plugin.
fn prune(cache: &Path, name: &str, keep: &Path) -> Result<()> {
    let prefix = format!("{name}-");
    for entry in fs::read_dir(cache).with_context(|| format!("cannot read {}", cache.display()))? {
        let path = entry?.path();
        let stale = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with(&prefix)
                && n.ends_with(".wasm")
                && n[prefix.len()..n.len() - ".wasm".len()].len() == 16
        });
        if stale && path != keep {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// The SHA-256 (hex) of everything a plugin's component is built from.
fn input_hash(root: &Path, plugin: &SdkPlugin) -> Result<String> {
    let sdk = match plugin.lang {
        Lang::Python => root.join("sdk").join("python"),
        Lang::JavaScript => root.join("sdk").join("js"),
    };
    let mut files = Vec::new();
    collect(&root.join("wit"), &mut files)?;
    collect(&sdk, &mut files)?;
    collect(&root.join("plugins").join(plugin.name), &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let contents =
            fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        hasher.update(
            file.strip_prefix(root)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        hasher.update([0]);
        hasher.update((contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Files and directories that never go into a component: the test
/// harnesses, the plugins' tests, installed packages and caches.
const NOT_INPUTS: &[&str] = &[
    "node_modules",
    "__pycache__",
    "tests",
    "pytest.ini",
    "switchyard_testing.py",
    "testing.js",
];

/// The source files under `dir`, but for [`NOT_INPUTS`], hidden files and
/// `*.test.mjs`.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with('.') || NOT_INPUTS.contains(&name) || name.ends_with(".test.mjs") {
            continue;
        }
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// `componentize-py` from the pinned requirements in a venv under
/// `target/sdk-tools/`, made (or refreshed) when the requirements changed.
fn python_tool(root: &Path) -> Result<PathBuf> {
    let requirements = root.join("sdk").join("python").join("requirements-dev.txt");
    let venv = root.join("target").join("sdk-tools").join("venv");
    let tool = venv.join("bin").join("componentize-py");
    let stamp = venv.join("requirements.installed");
    let wanted = fs::read(&requirements)
        .with_context(|| format!("cannot read {}", requirements.display()))?;
    if tool.is_file() && fs::read(&stamp).is_ok_and(|done| done == wanted) {
        return Ok(tool);
    }
    if !venv.join("bin").join("pip").is_file() {
        println!("xtask: python3 -m venv {}", venv.display());
        let mut make = Command::new("python3");
        make.args(["-m", "venv"]).arg(&venv);
        match make.status() {
            Err(err) if err.kind() == ErrorKind::NotFound => bail!(
                "python3 not found: the Python example plugins (chat_py) are built with \
                 componentize-py in a venv; install Python 3.11+ with venv \
                 (Debian: apt-get install python3 python3-venv)"
            ),
            Err(err) => return Err(err).context("cannot run python3"),
            Ok(status) if !status.success() => {
                bail!("`python3 -m venv` failed ({status}); Debian needs python3-venv")
            }
            Ok(_) => {}
        }
    }
    println!("xtask: pip install -r sdk/python/requirements-dev.txt");
    let mut pip = Command::new(venv.join("bin").join("pip"));
    pip.args(["install", "--quiet", "-r"]).arg(&requirements);
    crate::run(&mut pip)
        .context("installing componentize-py, pytest and websockets from PyPI failed")?;
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(tool)
}

/// `componentize-js` from `npm ci` in `sdk/js/` (pinned by its
/// package-lock.json), run when `node_modules` is missing or older than
/// the lock file.
fn js_tool(root: &Path) -> Result<PathBuf> {
    let dir = root.join("sdk").join("js");
    let tool = dir
        .join("node_modules")
        .join(".bin")
        .join("componentize-js");
    let modified = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules").join(".package-lock.json"));
    let locked = modified(&dir.join("package-lock.json"));
    if tool.is_file() && installed.is_some() && installed >= locked {
        return Ok(tool);
    }
    println!("xtask: npm ci (sdk/js/)");
    let mut npm = Command::new("npm");
    npm.current_dir(&dir)
        .args(["ci", "--no-audit", "--no-fund"]);
    match npm.status() {
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "npm not found: the JavaScript example plugins (chat_js) are built with \
             componentize-js from npm; install Node.js 20+ and npm \
             (Debian: apt-get install nodejs npm)"
        ),
        Err(err) => return Err(err).context("cannot run npm"),
        Ok(status) if !status.success() => {
            bail!("`npm ci` in sdk/js/ failed ({status}); it needs the npm registry")
        }
        Ok(_) => {}
    }
    Ok(tool)
}
