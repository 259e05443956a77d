//! The options reference: every option of the program as each front end spells it (the
//! command line's flag, the config file's key, the `gradcam` element's property, the Python
//! keyword), with its default, range, allowed values and help, all read from the declarations
//! (`cli::Args`, `settings.rs`, `settings::ELEMENT_PROPERTIES`). The book's `docs/options.md`
//! holds [`markdown`] between two markers (`cargo run --release --example options_reference`
//! writes it there), `tests/docs.rs` fails when the committed page differs, and the Python
//! package's keyword help reads the same [`rows`].

use clap::CommandFactory;

use crate::cli::Args;
use crate::settings::{self, PerStream};

/// The line before the generated list in `docs/options.md`.
pub const BEGIN: &str = "<!-- options: generated from the declarations by `cargo run --release --example options_reference`; edit src/settings.rs and src/cli.rs, not this list -->";
/// The line after it.
pub const END: &str = "<!-- options: end of the generated list -->";

/// Where the config file takes an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFile {
    /// Its top level only: the option applies to the whole run.
    Top,
    /// Its top level and each `[[stream]]` table.
    TopAndStreams,
}

/// One option, as every front end spells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The flag without its dashes (`batch-size`).
    pub long: String,
    pub short: Option<char>,
    /// What the flag takes (`N`, `auto|cpu|cuda`); None for a switch.
    pub value: Option<String>,
    /// The declared help, as one line.
    pub help: String,
    /// The default `--help` shows, where there is one.
    pub default: Option<String>,
    /// The declared range (`1 to 256`, `0, below 1`).
    pub range: Option<String>,
    /// An enumerated option's values.
    pub allowed: Vec<String>,
    /// The config file's key and where it may stand; None: the command line only.
    pub config: Option<(String, InFile)>,
    /// The element's property of the same setting.
    pub property: Option<&'static str>,
    /// The Python keyword of `gradcam_stream.explain` that gives it (Markdown).
    pub python: String,
}

/// Every option, in `--help`'s order.
pub fn rows() -> Vec<Row> {
    let shown = settings::shown_defaults();
    let stream = PerStream::default();
    Args::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| {
            let long = a.get_long()?.to_owned();
            let id = a.get_id().as_str();
            let takes = a.get_num_args().is_none_or(|n| n.takes_values());
            let value = takes.then(|| {
                a.get_value_names()
                    .and_then(|v| v.first())
                    .map_or_else(|| "VALUE".to_owned(), |v| v.to_string())
            });
            let help = one_line(&a.get_help().map(|h| h.to_string()).unwrap_or_default());
            let config = match id {
                "input" | "output" => Some((id.to_owned(), InFile::TopAndStreams)),
                _ if settings::doc(id).is_none() => None,
                _ if stream.field(id).is_some() => Some((id.to_owned(), InFile::TopAndStreams)),
                _ => Some((id.to_owned(), InFile::Top)),
            };
            let property = settings::ELEMENT_PROPERTIES
                .iter()
                .find(|p| p.1 == id)
                .map(|p| p.0)
                .or((id == "class").then_some("class"));
            let python = match id {
                "input" => "`source`, the first argument (a list for several)".to_owned(),
                "progress" => {
                    "`progress=`: True or False for the package's tqdm bar, or one of the values above"
                        .to_owned()
                }
                "class" => "`class_=`".to_owned(),
                _ => format!("`{id}=`"),
            };
            Some(Row {
                short: a.get_short(),
                value,
                help,
                default: shown.iter().find(|(s, _)| *s == id).map(|(_, d)| d.clone()),
                range: settings::bounds(id).map(range_text),
                allowed: settings::named::values_of(id).map_or_else(
                    || {
                        a.get_possible_values()
                            .iter()
                            .filter(|v| !v.is_hide_set())
                            .map(|v| v.get_name().to_owned())
                            .collect()
                    },
                    |v| v.into_iter().map(str::to_owned).collect(),
                ),
                config,
                property,
                python,
                long,
            })
        })
        .collect()
}

/// A declared range in words: `1 to 256`, `0, below 1`, `0 to any`.
pub fn range_text((low, high, inclusive): (f64, f64, bool)) -> String {
    let high = if high.is_finite() {
        format!("{high}")
    } else {
        "any".to_owned()
    };
    if inclusive {
        format!("{low} to {high}")
    } else {
        format!("{low}, below {high}")
    }
}

/// A `///` doc as one line.
fn one_line(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The list as the book shows it: a heading per option (so each has an anchor,
/// `options.md#--batch-size`), its help, then what it takes and where else it is set.
pub fn markdown() -> String {
    let mut out = String::new();
    for r in rows() {
        let short = r.short.map(|c| format!("-{c}, ")).unwrap_or_default();
        let value = r
            .value
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        out += &format!("\n### `{short}--{}{value}`\n\n{}\n\n", r.long, r.help);
        let mut takes = Vec::new();
        if let Some(d) = &r.default {
            takes.push(format!("default `{d}`"));
        }
        if !r.allowed.is_empty() {
            let names: Vec<String> = r.allowed.iter().map(|v| format!("`{v}`")).collect();
            takes.push(format!("one of {}", names.join(", ")));
        }
        if let Some(range) = &r.range {
            takes.push(format!("from {range}"));
        }
        if !takes.is_empty() {
            out += &format!("- {}\n", takes.join("; "));
        }
        let file = match &r.config {
            Some((key, InFile::Top)) => format!("`{key}` (top level)"),
            Some((key, InFile::TopAndStreams)) if key == "output" => {
                "`output` (top level); `outputs` (or `output`) in `[[stream]]` tables".to_owned()
            }
            Some((key, InFile::TopAndStreams)) => {
                format!("`{key}` (top level and `[[stream]]` tables)")
            }
            None => "— (command line only)".to_owned(),
        };
        out += &format!("- config file: {file}\n");
        if let Some(p) = r.property {
            out += &format!("- element property: `{p}`\n");
        }
        out += &format!("- Python: {}\n", r.python);
    }
    out
}

/// `page` with its generated list (between [`BEGIN`] and [`END`]) replaced by `list`; None
/// when the page lacks the markers.
pub fn with_list(page: &str, list: &str) -> Option<String> {
    let (head, rest) = page.split_once(BEGIN)?;
    let (_, tail) = rest.split_once(END)?;
    Some(format!("{head}{BEGIN}\n{list}\n{END}{tail}"))
}
