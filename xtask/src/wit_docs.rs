//! `cargo xtask wit-docs`: the plugin authors' reference of the WIT contract,
//! generated from `wit/` by `wit-bindgen-markdown` (the generator the WASI
//! proposals use for their own references) into `docs/wit/`, one page per
//! world of the `switchyard:consumer` package.
//!
//! The pages are committed; a unit test regenerates them in memory and fails
//! when they differ from the WIT, so the reference never goes stale.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::{InterfaceId, Resolve, WorldId, WorldItem};

/// Where the pages go, relative to the repository root.
const OUT_DIR: &str = "docs/wit";

/// The package the pages document (its WASI dependencies appear where a
/// world uses them).
const PACKAGE: &str = "switchyard:consumer";

/// WASI packages every world imports through `wasi:cli/imports` (the
/// interfaces the host links). The pages name them in the index but leave
/// their reference to WASI's own documentation: rendered in full they
/// would be nine tenths of each page. An interface that a kept one
/// depends on stays (e.g. `wasi:io/streams` for `wasi:http/types`).
const WASI_LEFT_OUT: &[&str] = &["cli", "clocks", "filesystem", "io", "random", "sockets"];

/// Write the reference pages into `docs/wit/`, removing pages of worlds
/// that no longer exist.
pub(crate) fn write(root: &Path) -> Result<()> {
    let pages = generate(root)?;
    let dir = root.join(OUT_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let stale = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.ends_with(".md") && !pages.contains_key(name));
        if stale {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for (name, text) in &pages {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The reference pages, by file name: an index and one page per world.
pub(crate) fn generate(root: &Path) -> Result<BTreeMap<String, String>> {
    let wit = root.join("wit");
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(&wit)
        .with_context(|| format!("parsing the WIT in {}", wit.display()))?;
    let name = resolve.packages[package].name.clone();
    if format!("{}:{}", name.namespace, name.name) != PACKAGE {
        bail!("{} holds `{name}`, expected `{PACKAGE}`", wit.display());
    }
    let worlds: Vec<_> = resolve.packages[package].worlds.values().copied().collect();
    let mut pages = BTreeMap::new();
    let mut index = format!(
        "# The `{name}` WIT reference\n\n\
         Generated from [`wit/`](../../wit) by `cargo xtask wit-docs`\n\
         (wit-bindgen-markdown); do not edit by hand. The guide is\n\
         [docs/plugins.md](../plugins.md).\n\n\
         Every world also imports `wasi:cli/imports@0.2.12` (cli, clocks,\n\
         filesystem, random, sockets, io), the WASI interfaces the host\n\
         links; the pages leave them out unless another interface on the\n\
         page uses their types (see WASI's own reference,\n\
         <https://github.com/WebAssembly/WASI>). Linked is not\n\
         granted: see the package notes on WASI in `wit/consumer.wit`.\n\n\
         | world | what it is for |\n| --- | --- |\n"
    );
    for world in worlds {
        let world_name = resolve.worlds[world].name.clone();
        let summary = resolve.worlds[world]
            .docs
            .contents
            .as_deref()
            .and_then(|docs| docs.split("\n\n").next())
            .unwrap_or("")
            .replace('\n', " ");
        let mut page_resolve = resolve.clone();
        leave_out_wasi(&mut page_resolve, world);
        let mut files = Files::default();
        wit_bindgen_markdown::Opts::default()
            .build()
            .generate(&mut page_resolve, world, &mut files)
            .with_context(|| format!("generating the page of world `{world_name}`"))?;
        let file = format!("{world_name}.md");
        let text = files
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .with_context(|| format!("the generator wrote no {file}"))?;
        index.push_str(&format!("| [`{world_name}`]({file}) | {summary} |\n"));
        pages.insert(file, text);
    }
    pages.insert("README.md".to_owned(), index);
    Ok(pages)
}

/// Drops from `world` the imports of the packages in [`WASI_LEFT_OUT`],
/// except those another kept import or an export depends on.
fn leave_out_wasi(resolve: &mut Resolve, world: WorldId) {
    let left_out = |interface: InterfaceId| {
        resolve.interfaces[interface]
            .package
            .map(|package| &resolve.packages[package].name)
            .is_some_and(|name| {
                name.namespace == "wasi" && WASI_LEFT_OUT.contains(&name.name.as_str())
            })
    };
    let interface_of = |item: &WorldItem| match item {
        WorldItem::Interface { id, .. } => Some(*id),
        _ => None,
    };
    let the_world = &resolve.worlds[world];
    let mut needed: Vec<InterfaceId> = the_world
        .imports
        .values()
        .chain(the_world.exports.values())
        .filter_map(interface_of)
        .filter(|id| !left_out(*id))
        .collect();
    let mut seen = std::collections::HashSet::new();
    while let Some(id) = needed.pop() {
        if seen.insert(id) {
            needed.extend(resolve.interface_direct_deps(id));
        }
    }
    let kept = the_world
        .imports
        .iter()
        .filter(|(_, item)| interface_of(item).is_none_or(|id| seen.contains(&id)))
        .map(|(key, item)| (key.clone(), item.clone()))
        .collect();
    resolve.worlds[world].imports = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_wit_reference_matches_the_wit() {
        let root = crate::repo_root();
        let pages = generate(&root).expect("the WIT parses and renders");
        assert!(pages.contains_key("consumer.md"), "a page for `consumer`");
        let mut stale = Vec::new();
        for (name, text) in &pages {
            let committed = fs::read_to_string(root.join(OUT_DIR).join(name)).unwrap_or_default();
            if &committed != text {
                stale.push(name.clone());
            }
        }
        assert!(
            stale.is_empty(),
            "docs/wit/ is stale for {stale:?}: run `cargo xtask wit-docs` and commit the result"
        );
    }
}
