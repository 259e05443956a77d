//! Writes the options reference into `docs/options.md` between its markers, from the
//! declarations (`gradcam_stream::options`); `tests/docs.rs` fails until it is run after a
//! setting changes. `--check` only says whether the page is current (exit 1 when not).

use std::path::Path;

use gradcam_stream::options;

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/options.md");
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("error: reading {}: {e}", path.display());
        std::process::exit(1)
    });
    let Some(new) = options::with_list(&page, &options::markdown()) else {
        eprintln!(
            "error: {} lacks the markers of the generated list; put the two marker lines of src/options.rs (BEGIN, END) where the list goes",
            path.display()
        );
        std::process::exit(1)
    };
    if std::env::args().any(|a| a == "--check") {
        let current = new == page;
        println!(
            "{}: {}",
            path.display(),
            if current { "current" } else { "stale" }
        );
        std::process::exit(i32::from(!current));
    }
    if new != page {
        std::fs::write(&path, new).unwrap_or_else(|e| {
            eprintln!("error: writing {}: {e}", path.display());
            std::process::exit(1)
        });
        println!("{}: rewritten", path.display());
    } else {
        println!("{}: already current", path.display());
    }
}
