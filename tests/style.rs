//! One line width for the whole tree. `rustfmt.toml` sets it for code rustfmt formats; strings,
//! comments and macro arguments it leaves alone are held to it here.

use std::path::{Path, PathBuf};

/// Also in `rustfmt.toml` (`max_width`).
const MAX_WIDTH: usize = 120;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_line_fits_the_width() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let rustfmt = std::fs::read_to_string(root.join("rustfmt.toml")).unwrap();
    assert!(rustfmt.contains(&format!("max_width = {MAX_WIDTH}")), "rustfmt.toml and this test disagree");
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let width = line.chars().count();
            if width > MAX_WIDTH {
                long.push(format!("{}:{} ({width})", file.strip_prefix(root).unwrap().display(), n + 1));
            }
        }
    }
    assert!(long.is_empty(), "lines over {MAX_WIDTH} columns:\n  {}", long.join("\n  "));
}
