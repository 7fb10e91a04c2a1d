//! What the documentation shows works: every TOML example in the README and docs/, and the
//! packaged example config, parses as a config file.
use std::path::{Path, PathBuf};

use edge::Policy;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The ```toml blocks of a Markdown file, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in text.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, "```toml") => current = Some((index + 2, String::new())),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some((_, block)), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_documented_config_example_parses() {
    let mut checked = 0;
    for doc in [
        "README.md",
        "docs/operations.md",
        "docs/fleet.md",
        "docs/tokens.md",
        "docs/syn-cookies.md",
    ] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        let blocks = toml_blocks(&text);
        assert!(!blocks.is_empty(), "{doc} shows no config example");
        for (line, block) in blocks {
            let name = format!("{doc}:{line}");
            if let Err(e) = Policy::parse(&block, &name, Path::new("/etc/edge")) {
                panic!("the example at {name} does not parse: {e}");
            }
            checked += 1;
        }
    }
    let packaged = repo().join("packaging/edge.toml");
    Policy::load(&packaged).unwrap_or_else(|e| panic!("{e}"));
    assert!(checked >= 2);
}
