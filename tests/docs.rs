//! The documentation: the options page equals what the declarations generate, every relative
//! link and anchor in the README, the changelog and the book resolves inside the repository
//! (no network), the book's table of contents lists every page, and the README stays short.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files a reader has: the README, the changelog and every page of the book.
fn pages() -> Vec<PathBuf> {
    let mut all = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    let mut book: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    book.sort();
    all.extend(book);
    all
}

/// The text outside fenced code blocks and inline code, line by line (with line numbers).
fn prose(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code spans hold text like `[[stream]]` or `x](y)` that is not a link.
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push((n + 1, kept));
    }
    out
}

/// Every `[text](target)` and `![alt](target)` target in `text`, with its line.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in prose(text) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.to_owned()));
            rest = &after[end..];
        }
    }
    out
}

/// A heading's anchor as GitHub and mdBook make it: lower case, letters, digits, `-` and `_`
/// kept, spaces made `-`, everything else dropped; a repeated one gets `-1`, `-2`, ….
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// `path` with `.` and `..` resolved lexically; None when it climbs above the filesystem root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[test]
fn the_options_page_is_what_the_declarations_generate() {
    use gradcam_stream::options;
    let path = root().join("docs/options.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let generated = options::with_list(&page, &options::markdown())
        .expect("docs/options.md has the generated list's markers");
    assert!(
        generated == page,
        "docs/options.md differs from the declarations: run `cargo run --release --example options_reference` and commit the page"
    );
    // Every flag is on the page, with its config key where it has one.
    for row in options::rows() {
        assert!(page.contains(&format!("--{}", row.long)), "--{}", row.long);
        if let Some((key, _)) = &row.config {
            assert!(page.contains(&format!("`{key}")), "{key}");
        }
    }
}

#[test]
fn every_relative_link_and_anchor_resolves_inside_the_repository() {
    let repo = root();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let here = page.strip_prefix(&repo).unwrap().display().to_string();
        for (line, target) in links(&text) {
            if target.is_empty() {
                broken.push(format!("{here}:{line}: an empty link"));
                continue;
            }
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if file.is_empty() {
                Some(page.clone())
            } else {
                normalize(&page.parent().unwrap().join(file))
            };
            let Some(dest) = dest.filter(|d| d.starts_with(&repo)) else {
                broken.push(format!(
                    "{here}:{line}: {target} points outside the repository"
                ));
                continue;
            };
            if !dest.exists() {
                broken.push(format!("{here}:{line}: {target}: no such file"));
                continue;
            }
            if let Some(anchor) = anchor {
                let text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&text).iter().any(|a| a == anchor) {
                    broken.push(format!("{here}:{line}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} relative links found: is the parser right?"
    );
}

#[test]
fn nothing_points_outside_the_repository() {
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("../shared") && !line.contains("/work/"),
                "{}:{}: points outside the repository: {line}",
                page.display(),
                n + 1
            );
        }
    }
}

#[test]
fn the_book_lists_every_page_and_the_readme_is_short() {
    let summary = std::fs::read_to_string(root().join("docs/SUMMARY.md")).unwrap();
    let listed: Vec<String> = links(&summary).into_iter().map(|(_, t)| t).collect();
    for page in pages() {
        if page.parent() != Some(&root().join("docs")) {
            continue;
        }
        let name = page.file_name().unwrap().to_string_lossy().to_string();
        if name != "SUMMARY.md" {
            assert!(
                listed.contains(&name),
                "docs/SUMMARY.md does not list {name}"
            );
        }
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines; at most 250");
    let demo = readme.find("make demo").expect("README names make demo");
    let test = readme.find("make test").expect("README names make test");
    let usage = readme.find("## Usage").expect("README has a Usage section");
    assert!(
        demo < test && test < usage,
        "the two setup commands come first"
    );
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    let text = "# A title\n\n## Two words\n\n[a](x.md#two-words) `[b](not-a-link)` ![c](d.png)\n\n```\n[e](in-code)\n```\n";
    let found: Vec<String> = links(text).into_iter().map(|(_, t)| t).collect();
    assert_eq!(found, ["x.md#two-words", "d.png"]);
    assert_eq!(anchors(text), ["a-title", "two-words"]);
    assert_eq!(
        anchors("# `--batch-size N`\n# Metrics and health (`--metrics ADDR`)\n# X\n# X\n"),
        [
            "--batch-size-n",
            "metrics-and-health---metrics-addr",
            "x",
            "x-1"
        ]
    );
}
