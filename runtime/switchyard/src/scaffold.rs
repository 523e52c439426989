//! `switchyard new NAME --lang rust|python|js`: writes a plugin project from
//! the templates embedded in the binary (`templates/` in the repository):
//! the manifest `NAME.toml`, a room consumer on the language's SDK, a test
//! on the language's harness, and a README with the commands that build
//! and serve it. `switchyard build` ([`crate::project_build`]) turns it into
//! `dist/NAME.wasm`.
//!
//! The SDKs are not on a registry yet, so a project refers to a Switchyard
//! checkout (the "SDK root": `plugins/sdk`, `runtime/testing`, `sdk/python`,
//! `sdk/js`, `wit/`): `--sdk PATH`, else `SWITCHYARD_SDK`, else the
//! checkout this binary was built from.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

/// The languages `switchyard new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust on `switchyard-sdk`, built by cargo for wasm32-wasip2.
    Rust,
    /// Python on `switchyard_channels`, built by componentize-py.
    Python,
    /// JavaScript on `switchyard-channels.js`, built by componentize-js.
    Js,
}

/// `switchyard new NAME --lang LANG [--dir PATH] [--sdk PATH]`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and `_`, starting with
    /// a letter (it names the component, the manifest and the route)
    pub name: String,
    /// The language of the consumer
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to write the project [default: ./NAME]; an existing
    /// directory must be empty
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Switchyard checkout whose SDKs the project uses [default: the
    /// one this binary was built from]
    #[arg(long, env = "SWITCHYARD_SDK")]
    pub sdk: Option<PathBuf>,
}

/// A template file: where it goes in the project and what it holds.
struct Template {
    path: &'static str,
    text: &'static str,
}

macro_rules! templates {
    ($lang:literal: $($path:literal),* $(,)?) => {
        &[$(Template {
            path: $path,
            text: include_str!(concat!("../../../templates/", $lang, "/", $path)),
        }),*]
    };
}

const RUST: &[Template] = templates!("rust":
    "Cargo.toml", "plugin.toml", "src/lib.rs", "tests/room.rs", "README.md", ".gitignore");
const PYTHON: &[Template] = templates!("python":
    "app.py", "plugin.toml", "requirements.txt", "pytest.ini", "tests/test_room.py",
    "README.md", ".gitignore");
const JS: &[Template] = templates!("js":
    "consumer.js", "plugin.toml", "package.json", "room.test.mjs", "README.md", ".gitignore");

/// Names the toolchains or the host reserve.
const RESERVED: &[&str] = &[
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "self",
    "super",
    "crate",
    "build",
    "deps",
    "examples",
    "incremental",
    "dist",
];

/// Checks a plugin name: `[a-z][a-z0-9_]*`, at most 64 characters, not a
/// reserved word. It becomes a file name, a Cargo package, a route segment
/// and the prefix of group names, so it is kept to what all of them take.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "invalid plugin name {name:?}: use 1 to 64 lower-case letters, digits and `_`, \
             starting with a letter (e.g. `hello` or `chat_rooms`)"
        );
    }
    if RESERVED.contains(&name) {
        bail!("invalid plugin name {name:?}: it is reserved, choose another");
    }
    Ok(())
}

/// The SDK root: `--sdk`, `SWITCHYARD_SDK`, or the checkout this binary was
/// built from; made absolute and checked to hold what `lang` needs.
pub fn sdk_root(sdk: Option<&Path>, lang: Lang) -> anyhow::Result<PathBuf> {
    let (given, source) = match sdk {
        Some(path) => (path.to_path_buf(), "--sdk / SWITCHYARD_SDK"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
            "the checkout switchyard was built from",
        ),
    };
    let root = given.canonicalize().with_context(|| {
        format!(
            "the Switchyard SDK checkout {} ({source}) cannot be read; pass --sdk PATH or set \
             SWITCHYARD_SDK to a Switchyard checkout",
            given.display()
        )
    })?;
    let needed: &[&str] = match lang {
        Lang::Rust => &[
            "plugins/sdk/Cargo.toml",
            "runtime/testing/Cargo.toml",
            "wit",
        ],
        Lang::Python => &["sdk/python/switchyard_channels", "wit"],
        Lang::Js => &["sdk/js/switchyard-channels.js", "wit"],
    };
    for part in needed {
        if !root.join(part).exists() {
            bail!(
                "{} ({source}) is not a Switchyard checkout with the {lang:?} SDK: {part} is \
                 missing; pass --sdk PATH or set SWITCHYARD_SDK",
                root.display()
            );
        }
    }
    let text = root
        .to_str()
        .with_context(|| format!("the SDK path {} is not valid UTF-8", root.display()))?;
    // The path is written into TOML, Python, ini and JS sources unquoted or
    // in plain string literals.
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '`' | '$'))
    {
        bail!(
            "the SDK path {text:?} has a space, quote, `\\`, `$` or backquote, which the \
             generated sources cannot hold; use a checkout at a plainer path"
        );
    }
    Ok(root)
}

/// `switchyard new`: writes the project and says what to do next.
pub fn new_project(args: &NewArgs) -> anyhow::Result<()> {
    validate_name(&args.name)?;
    let sdk = sdk_root(args.sdk.as_deref(), args.lang)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    write_project(&dir, &args.name, args.lang, &sdk)?;
    println!(
        "Created {lang:?} plugin {name} in {dir}\nNext:\n  switchyard build {dir}\n  \
         switchyard serve --plugins {dist}\n  (then connect to ws://127.0.0.1:8000/ws/{name}/lobby/)",
        lang = args.lang,
        name = args.name,
        dir = dir.display(),
        dist = dir.join("dist").display(),
    );
    Ok(())
}

/// Writes the project of `lang` for plugin `name` into `dir`, which must
/// not exist or be empty.
pub fn write_project(dir: &Path, name: &str, lang: Lang, sdk: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("{} exists and is not a readable directory", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} already exists and is not empty: choose another --dir or remove it",
                dir.display()
            );
        }
    }
    let sdk = sdk.to_str().context("the SDK path is not valid UTF-8")?;
    let templates = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    for template in templates {
        let path = match template.path {
            "plugin.toml" => format!("{name}.toml"),
            other => other.to_owned(),
        };
        let to = dir.join(path);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = template
            .text
            .replace("{{name}}", name)
            .replace("{{sdk}}", sdk);
        fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))?;
    }
    if lang == Lang::Js {
        // componentize-js does not load a module by absolute path, so the
        // project holds its copy of the SDK (one file).
        let from = Path::new(sdk).join("sdk/js/switchyard-channels.js");
        let to = dir.join("switchyard-channels.js");
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_clear_error() {
        for good in ["hello", "chat_rooms", "a1"] {
            validate_name(good).expect(good);
        }
        for bad in [
            "",
            "Hello",
            "1up",
            "my-plugin",
            "a b",
            "../x",
            "test",
            &"a".repeat(65),
        ] {
            let err = validate_name(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn every_template_is_written_with_the_name_and_sdk_filled_in() {
        let sdk = sdk_root(None, Lang::Rust).expect("this checkout");
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            let dir = tempfile_dir();
            let project = dir.join(format!("{lang:?}"));
            write_project(&project, "demo", lang, &sdk).expect("written");
            let manifest = fs::read_to_string(project.join("demo.toml")).expect("manifest");
            assert!(manifest.contains("ws/demo/<str:room_name>/"), "{manifest}");
            for entry in walk(&project) {
                let text = fs::read_to_string(&entry).expect("text");
                assert!(
                    !text.contains("{{"),
                    "{} keeps a placeholder",
                    entry.display()
                );
            }
            let err = write_project(&project, "demo", lang, &sdk)
                .expect_err("not empty")
                .to_string();
            assert!(err.contains("not empty"), "{err}");
            fs::remove_dir_all(&dir).expect("cleanup");
        }
    }

    #[test]
    fn a_missing_sdk_is_named() {
        let err = sdk_root(Some(Path::new("/nonexistent/switchyard")), Lang::Python)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/nonexistent/switchyard"), "{err}");
        let err = sdk_root(Some(Path::new("/")), Lang::Js)
            .expect_err("not a checkout")
            .to_string();
        assert!(err.contains("sdk/js/switchyard-channels.js"), "{err}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-scaffold-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
