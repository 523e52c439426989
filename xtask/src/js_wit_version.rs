//! The JavaScript SDK imports the host by its versioned name
//! (`'switchyard:consumer/host@0.2.0'`): ES module specifiers are string
//! literals, so the version cannot be computed, and componentize-js needs
//! it to match the WIT package. This check fails when any JS source under
//! `sdk/js`, `plugins/*_js` or `templates/js` names a
//! `switchyard:consumer/...@V` whose `V` is not `wit/consumer.wit`'s
//! package version, so the next bump cannot break the SDK silently. It runs
//! before `cargo xtask plugins` builds the JS plugins, and as a unit test.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wit_bindgen_core::wit_parser::Resolve;

/// The prefix of an import of the Switchyard package in JS source.
const PREFIX: &str = "switchyard:consumer/";

/// The version of the package in `wit/` (e.g. `0.2.0`).
pub(crate) fn wit_version(root: &Path) -> Result<String> {
    let wit = root.join("wit");
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(&wit)
        .with_context(|| format!("parsing the WIT in {}", wit.display()))?;
    match &resolve.packages[package].name.version {
        Some(version) => Ok(version.to_string()),
        None => bail!("{} has no package version", wit.display()),
    }
}

/// Each `switchyard:consumer/<interface>@<version>` named in `text`, as
/// `(interface@version, version)`.
fn versioned_names(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(PREFIX) {
        let rest = &text[at + PREFIX.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '@')))
            .unwrap_or(rest.len());
        // A sentence may end right after the name.
        let name = rest[..end].trim_end_matches('.');
        if let Some((_, version)) = name.split_once('@') {
            found.push((name.to_owned(), version.to_owned()));
        }
    }
    found
}

/// The JS sources that may import the host.
fn js_sources(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![
        root.join("sdk").join("js"),
        root.join("templates").join("js"),
    ];
    let plugins = root.join("plugins");
    for entry in fs::read_dir(&plugins).with_context(|| format!("reading {}", plugins.display()))? {
        let path = entry?.path();
        if path.is_dir()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with("_js"))
        {
            dirs.push(path);
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let is_js = path
                .extension()
                .is_some_and(|ext| ext == "js" || ext == "mjs");
            if is_js {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Fails naming every JS import of the package at another version.
pub(crate) fn check(root: &Path) -> Result<()> {
    let version = wit_version(root)?;
    let mut wrong = Vec::new();
    for file in js_sources(root)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (name, found) in versioned_names(&text) {
            if found != version {
                wrong.push(format!("{}: {PREFIX}{name}", file.display()));
            }
        }
    }
    if !wrong.is_empty() {
        bail!(
            "JS imports of switchyard:consumer must use the WIT package version {version} \
             (wit/consumer.wit); these do not:\n  {}",
            wrong.join("\n  ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_names_are_found_with_their_versions() {
        let text = "import { log } from 'switchyard:consumer/host@0.1.2';\n\
                    // see switchyard:consumer/types@0.2.0.\n\
                    // and switchyard:consumer/host without a version";
        assert_eq!(
            versioned_names(text),
            vec![
                ("host@0.1.2".to_owned(), "0.1.2".to_owned()),
                ("types@0.2.0".to_owned(), "0.2.0".to_owned()),
            ]
        );
    }

    #[test]
    fn the_js_sdk_imports_the_wit_package_version() {
        let root = crate::repo_root();
        let sdk = fs::read_to_string(root.join("sdk/js/switchyard-channels.js")).expect("the SDK");
        let version = wit_version(&root).expect("the WIT parses");
        assert!(
            versioned_names(&sdk)
                .iter()
                .any(|(name, found)| name.starts_with("host@") && *found == version),
            "the JS SDK imports switchyard:consumer/host@{version}"
        );
        check(&root).expect("every JS import names the WIT's version");
    }
}
