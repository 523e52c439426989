//! `switchyard build [DIR]`: builds a plugin project (as `switchyard new`
//! writes them, [`crate::scaffold`]) into `DIR/dist/NAME.wasm` beside a
//! copy of its manifest `NAME.toml`, ready for a plugin directory.
//!
//! The language is told by the project's files: `Cargo.toml` (Rust, `cargo
//! build --release --target wasm32-wasip2`), `app.py` (Python,
//! componentize-py from `DIR/.venv` or PATH), `consumer.js` (JavaScript,
//! componentize-js from `DIR/node_modules`, the SDK's `node_modules`, or
//! PATH). The Python and JavaScript command lines are those of `cargo xtask
//! plugins` for `chat_py` and `chat_js`. The component is written beside
//! its final name and renamed into place, so a server watching `dist/`
//! never loads half a file.

use std::fs;
use std::io::{BufRead as _, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::scaffold::{Lang, sdk_root, validate_name};

/// The pinned toolchain versions (as in `sdk/python/requirements-dev.txt`
/// and `sdk/js/package.json`).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// `switchyard build [DIR] [--sdk PATH]`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The project directory [default: .]
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The Switchyard checkout whose SDK and WIT a Python or JavaScript
    /// build uses [default: the one this binary was built from]
    #[arg(long, env = "SWITCHYARD_SDK")]
    pub sdk: Option<PathBuf>,
}

/// `switchyard build`: builds the project and prints where the plugin is.
pub fn build_project(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("project directory {} cannot be read", args.dir.display()))?;
    let lang = detect(&dir)?;
    let name = plugin_name(&dir)?;
    let dist = dir.join("dist");
    fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    let wasm = dist.join(format!("{name}.wasm"));
    let temp = dist.join(format!(".{name}.wasm.tmp"));
    match lang {
        Lang::Rust => build_rust(&dir, &temp)?,
        Lang::Python => {
            let sdk = sdk_root(args.sdk.as_deref(), lang)?;
            let tool = python_tool(&dir)?;
            let mut command = Command::new(&tool);
            command
                .current_dir(&dir)
                .arg("-d")
                .arg(sdk.join("wit"))
                .args(["-w", "consumer", "componentize", "-p"])
                .arg(&dir)
                .arg("-p")
                .arg(sdk.join("sdk").join("python"))
                .arg("app")
                .arg("-o")
                .arg(&temp);
            run(&mut command, &tool)?;
        }
        Lang::Js => {
            let sdk = sdk_root(args.sdk.as_deref(), lang)?;
            let tool = js_tool(&dir, &sdk)?;
            let mut command = Command::new(&tool);
            command
                .current_dir(&dir)
                .arg("--wit")
                .arg(sdk.join("wit"))
                .args(["--world-name", "consumer"])
                // Without `-d http` the component imports wasi:http/types,
                // which consumers are not given.
                .args(["-d", "http", "fetch-event", "-o"])
                .arg(&temp)
                .arg(dir.join("consumer.js"));
            run(&mut command, &tool)?;
        }
    }
    fs::rename(&temp, &wasm)
        .with_context(|| format!("cannot move the component to {}", wasm.display()))?;
    let manifest = dir.join(format!("{name}.toml"));
    let copy = dist.join(format!("{name}.toml"));
    let text =
        fs::read(&manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    fs::write(&copy, text).with_context(|| format!("cannot write {}", copy.display()))?;
    let size = fs::metadata(&wasm)?.len();
    println!(
        "Built {name} ({lang:?}): {} ({size} bytes) and {}\nServe it: switchyard serve --plugins {}",
        wasm.display(),
        copy.display(),
        dist.display()
    );
    Ok(wasm)
}

/// The language of the project in `dir`, by its files.
fn detect(dir: &Path) -> anyhow::Result<Lang> {
    let found: Vec<Lang> = [
        ("Cargo.toml", Lang::Rust),
        ("app.py", Lang::Python),
        ("consumer.js", Lang::Js),
    ]
    .into_iter()
    .filter(|(file, _)| dir.join(file).is_file())
    .map(|(_, lang)| lang)
    .collect();
    match found.as_slice() {
        [lang] => Ok(*lang),
        [] => bail!(
            "{} is not a plugin project: it has no Cargo.toml (Rust), app.py (Python) or \
             consumer.js (JavaScript); make one with `switchyard new NAME --lang rust|python|js`",
            dir.display()
        ),
        several => bail!(
            "{} has the entry files of several languages ({several:?}): keep one of \
             Cargo.toml, app.py, consumer.js",
            dir.display()
        ),
    }
}

/// The plugin's name: the one manifest `NAME.toml` in `dir` (other than
/// Cargo.toml and pyproject.toml).
fn plugin_name(dir: &Path) -> anyhow::Result<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if let Some(stem) = file.strip_suffix(".toml")
            && !matches!(file, "Cargo.toml" | "pyproject.toml")
            && path.is_file()
        {
            names.push(stem.to_owned());
        }
    }
    match names.as_slice() {
        [name] => {
            validate_name(name).with_context(|| format!("manifest {name}.toml"))?;
            Ok(name.clone())
        }
        [] => bail!(
            "{} has no plugin manifest NAME.toml (the routes of the plugin NAME)",
            dir.display()
        ),
        several => bail!(
            "{} has several manifests ({}): keep the one NAME.toml of the plugin",
            dir.display(),
            several
                .iter()
                .map(|name| format!("{name}.toml"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the cdylib it
/// reports is copied to `out`.
fn build_rust(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // Said before cargo says "can't find crate for `core`".
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output();
    match sysroot {
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "rustc not found: a Rust plugin is built with cargo; install Rust (https://rustup.rs) \
             and `rustup target add wasm32-wasip2`"
        ),
        Err(err) => return Err(err).context("cannot run rustc"),
        Ok(output) => {
            let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !Path::new(&sysroot)
                .join("lib/rustlib/wasm32-wasip2")
                .is_dir()
            {
                bail!(
                    "the Rust target wasm32-wasip2 is not installed (not in {sysroot}): \
                     rustup target add wasm32-wasip2"
                );
            }
        }
    }
    let mut command = Command::new(&cargo);
    command
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut artifact = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"));
        if message["reason"] == "compiler-artifact" && is_cdylib {
            artifact = message["filenames"].as_array().and_then(|files| {
                files
                    .iter()
                    .filter_map(|file| file.as_str())
                    .find(|file| file.ends_with(".wasm"))
                    .map(PathBuf::from)
            });
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!(
            "`cargo build --release --target wasm32-wasip2` failed in {} ({status})",
            dir.display()
        );
    }
    let artifact = artifact.with_context(|| {
        format!(
            "cargo built no .wasm in {}: the package needs `crate-type = [\"cdylib\"]` under [lib]",
            dir.display()
        )
    })?;
    fs::copy(&artifact, out)
        .with_context(|| format!("cannot copy {} to {}", artifact.display(), out.display()))?;
    Ok(())
}

/// componentize-py from the project's `.venv`, else from PATH.
fn python_tool(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = dir.join(".venv").join("bin").join("componentize-py");
    if venv.is_file() {
        return Ok(venv);
    }
    on_path("componentize-py").with_context(|| {
        format!(
            "componentize-py not found in {}/.venv or on PATH: a Python plugin is built with \
             {COMPONENTIZE_PY}; install it with `python3 -m venv .venv && .venv/bin/pip install \
             -r requirements.txt` in the project",
            dir.display()
        )
    })
}

/// componentize-js from the project's `node_modules`, the SDK's, or PATH.
fn js_tool(dir: &Path, sdk: &Path) -> anyhow::Result<PathBuf> {
    let bin = Path::new("node_modules")
        .join(".bin")
        .join("componentize-js");
    for base in [dir.to_path_buf(), sdk.join("sdk").join("js")] {
        let tool = base.join(&bin);
        if tool.is_file() {
            return Ok(tool);
        }
    }
    on_path("componentize-js").with_context(|| {
        format!(
            "componentize-js not found in {}/node_modules, {}/sdk/js/node_modules or on PATH: a \
             JavaScript plugin is built with {COMPONENTIZE_JS}; run `npm install` in the project",
            dir.display(),
            sdk.display()
        )
    })
}

/// The first executable file `program` on PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs a build tool, its output going to ours.
fn run(command: &mut Command, tool: &Path) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", tool.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_a_project_is_named() {
        let dir = std::env::temp_dir().join(format!("switchyard-build-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let err = detect(&dir).expect_err("empty").to_string();
        assert!(err.contains("not a plugin project"), "{err}");
        fs::write(dir.join("app.py"), "").expect("write");
        assert_eq!(detect(&dir).expect("python"), Lang::Python);
        let err = plugin_name(&dir).expect_err("no manifest").to_string();
        assert!(err.contains("no plugin manifest"), "{err}");
        fs::write(dir.join("one.toml"), "").expect("write");
        fs::write(dir.join("two.toml"), "").expect("write");
        let err = plugin_name(&dir).expect_err("two").to_string();
        assert!(
            err.contains("one.toml") && err.contains("two.toml"),
            "{err}"
        );
        fs::remove_file(dir.join("two.toml")).expect("remove");
        assert_eq!(plugin_name(&dir).expect("one"), "one");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
