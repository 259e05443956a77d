//! `declare!`: from one list of settings, the structs every front end uses. For each setting
//! `$(/// doc)* #[arg(…)] $(#[serde(…)])? name: Type $(= default $(=> "shown")?)? $(, range R, "text")?;`
//! it generates
//! - [`Flags`]: a clap `Args` struct, every field `Option<Type>` (None: not given), flattened
//!   into the command line's `Args`;
//! - `FileConfig` and `StreamTable`: the config file's top level and its `[[stream]]` tables
//!   (unknown keys rejected), `Option<Type>` too; a table has the `stream` settings only;
//! - `Run` and `PerStream`: the merged values, `Type` where there is a default (in `Default`,
//!   the one place it is written), `Option<Type>` where there is none, with `layered` (the
//!   merge, in layer order) and `check_ranges`;
//! - `field(name)`/`field_mut(name)` on `Run` and `PerStream`, `doc(name)`, `bounds(name)` and
//!   `shown_defaults()`: a setting by its name, for the element's properties and `--help`.
//!
//! It never interprets a value beyond its range: that is `config.rs`'s job, on the merged result.

/// A value as an out-of-range message quotes it: as given, but a number too long for plain
/// digits in exponent form (`1e300`, not 301 digits).
pub fn quoted<T: std::fmt::Display + std::fmt::LowerExp>(v: T) -> String {
    let plain = v.to_string();
    if plain.len() > 20 {
        format!("{v:e}")
    } else {
        plain
    }
}

/// What `--help` shows as a setting's default.
pub trait Shown {
    fn shown(&self) -> Option<String>;
}

/// A ranged setting's value, where there is one: a defaulted setting always has one, an
/// optional one where it was given.
pub trait Given {
    type Value;
    fn given(&self) -> Option<Self::Value>;
}

macro_rules! given {
    ($($t:ty),*) => { $(
        impl Given for $t {
            type Value = $t;
            fn given(&self) -> Option<$t> { Some(*self) }
        }
        impl Given for Option<$t> {
            type Value = $t;
            fn given(&self) -> Option<$t> { *self }
        }
    )* };
}
given!(usize, u64, u32, f32, f64);

macro_rules! shown_by_display {
    ($($t:ty),*) => { $(impl Shown for $t { fn shown(&self) -> Option<String> { Some(self.to_string()) } })* };
}
shown_by_display!(usize, u64, u32, f32, f64, String);

impl Shown for bool {
    /// A switch shows no default: given means on (or off, for a `--no-…` switch).
    fn shown(&self) -> Option<String> {
        None
    }
}

impl Shown for std::path::PathBuf {
    fn shown(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

/// A declared range as (low, high, whether high is included), for GObject property specs.
pub trait Bounds {
    fn bounds(&self) -> (f64, f64, bool);
}

impl<T: Copy + Into<f64>> Bounds for std::ops::RangeInclusive<T> {
    fn bounds(&self) -> (f64, f64, bool) {
        ((*self.start()).into(), (*self.end()).into(), true)
    }
}

impl<T: Copy + Into<f64>> Bounds for std::ops::Range<T> {
    fn bounds(&self) -> (f64, f64, bool) {
        (self.start.into(), self.end.into(), false)
    }
}

macro_rules! declare {
    (@ty $t:ty ;) => { Option<$t> };
    (@ty $t:ty ; $d:expr) => { $t };
    (@default) => { None };
    (@default $d:expr) => { $d };
    (@pick $v:expr ;) => { $v };
    (@pick $v:expr ; $d:expr) => { $v.unwrap_or_else(|| $d) };
    (@shown $v:expr ; $d:expr => $s:literal) => { Some(String::from($s)) };
    (@shown $v:expr ; $d:expr) => { $crate::settings::declare::Shown::shown(&$v) };
    (@check $v:expr, $name:ident, $range:expr, $text:literal) => {
        if let Some(v) = $crate::settings::declare::Given::given(&$v) {
            if !($range).contains(&v) {
                return Err(format!(
                    "--{} {} is out of range; use {}",
                    stringify!($name).replace('_', "-"),
                    $crate::settings::declare::quoted(v),
                    $text
                ));
            }
        }
    };
    (
        run { $(
            $(#[doc = $rdoc:literal])*
            #[arg($($rarg:tt)*)]
            $(#[serde($($rserde:tt)*)])?
            $rf:ident : $rty:ty $(= $rdef:expr $(=> $rshown:literal)?)? $(, range $rrange:expr, $rtext:literal)? ;
        )* }
        stream { $(
            $(#[doc = $sdoc:literal])*
            #[arg($($sarg:tt)*)]
            $(#[serde($($sserde:tt)*)])?
            $sf:ident : $sty:ty $(= $sdef:expr $(=> $sshown:literal)?)? $(, range $srange:expr, $stext:literal)? ;
        )* }
    ) => {
        /// Every setting as the command line gives it (None: the flag was left out, so the
        /// layers below show through).
        #[derive(Debug, Default, Clone, PartialEq, clap::Args)]
        pub struct Flags {
            $( $(#[doc = $rdoc])* #[arg($($rarg)*)] pub $rf: Option<$rty>, )*
            $( $(#[doc = $sdoc])* #[arg($($sarg)*)] pub $sf: Option<$sty>, )*
        }

        /// The config file: the same settings as the flags, with snake_case keys, plus the
        /// inputs and outputs. Unknown keys are errors.
        #[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            pub input: Option<String>,
            pub output: Option<OneOrMany>,
            /// `[[stream]]` tables: one stream each (the command line's `--input`s replace them).
            #[serde(default)]
            pub stream: Vec<StreamTable>,
            $( $(#[serde($($rserde)*)])? pub $rf: Option<$rty>, )*
            $( $(#[serde($($sserde)*)])? pub $sf: Option<$sty>, )*
        }

        /// One `[[stream]]` table: an input with its own outputs and the settings that may
        /// differ from stream to stream. What it leaves out comes from the flags and the file's
        /// top level.
        #[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct StreamTable {
            pub name: Option<String>,
            pub input: String,
            #[serde(alias = "output")]
            pub outputs: Option<OneOrMany>,
            $( $(#[serde($($sserde)*)])? pub $sf: Option<$sty>, )*
        }

        /// The run-wide settings, merged: flags over the file's top level over the defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Run {
            $( $(#[doc = $rdoc])* pub $rf: declare!(@ty $rty ; $($rdef)?), )*
        }

        /// One stream's settings, merged: flags over its table over the file's top level over
        /// the defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct PerStream {
            $( $(#[doc = $sdoc])* pub $sf: declare!(@ty $sty ; $($sdef)?), )*
        }

        impl Default for Run {
            fn default() -> Self {
                Run { $( $rf: declare!(@default $($rdef)?), )* }
            }
        }

        impl Default for PerStream {
            fn default() -> Self {
                PerStream { $( $sf: declare!(@default $($sdef)?), )* }
            }
        }

        impl Run {
            pub fn layered(flags: &Flags, file: &FileConfig) -> Self {
                Run { $( $rf: declare!(@pick flags.$rf.clone().or_else(|| file.$rf.clone()) ; $($rdef)?), )* }
            }

            /// The declared ranges, as one line naming the flag and what to use.
            pub fn check_ranges(&self) -> Result<(), String> {
                $( $( declare!(@check self.$rf, $rf, $rrange, $rtext); )? )*
                Ok(())
            }
        }

        impl PerStream {
            pub fn layered(flags: &Flags, table: &StreamTable, file: &FileConfig) -> Self {
                PerStream { $( $sf: declare!(@pick flags.$sf.clone()
                    .or_else(|| table.$sf.clone())
                    .or_else(|| file.$sf.clone()) ; $($sdef)?), )* }
            }

            pub fn check_ranges(&self) -> Result<(), String> {
                $( $( declare!(@check self.$sf, $sf, $srange, $stext); )? )*
                Ok(())
            }
        }

        impl Run {
            /// A setting by its name (`batch_size`), for a front end that sets settings by
            /// name: the element's properties.
            pub fn field(&self, name: &str) -> Option<&dyn std::any::Any> {
                match name { $( stringify!($rf) => Some(&self.$rf), )* _ => None }
            }

            pub fn field_mut(&mut self, name: &str) -> Option<&mut dyn std::any::Any> {
                match name { $( stringify!($rf) => Some(&mut self.$rf), )* _ => None }
            }
        }

        impl PerStream {
            pub fn field(&self, name: &str) -> Option<&dyn std::any::Any> {
                match name { $( stringify!($sf) => Some(&self.$sf), )* _ => None }
            }

            pub fn field_mut(&mut self, name: &str) -> Option<&mut dyn std::any::Any> {
                match name { $( stringify!($sf) => Some(&mut self.$sf), )* _ => None }
            }
        }

        /// A setting's help, as `--help` shows it before its default (one line).
        pub fn doc(name: &str) -> Option<&'static str> {
            match name {
                $( stringify!($rf) => Some(concat!($($rdoc),*)), )*
                $( stringify!($sf) => Some(concat!($($sdoc),*)), )*
                _ => None,
            }
        }

        /// A setting's declared range by its name (`batch_size`): (low, high, high included).
        pub fn bounds(name: &str) -> Option<(f64, f64, bool)> {
            use $crate::settings::declare::Bounds;
            $( $( if name == stringify!($rf) { return Some(($rrange).bounds()); } )? )*
            $( $( if name == stringify!($sf) { return Some(($srange).bounds()); } )? )*
            None
        }

        /// Each defaulted setting's clap id (its name) and the default `--help` shows.
        pub fn shown_defaults() -> Vec<(&'static str, String)> {
            let (run, stream) = (Run::default(), PerStream::default());
            let shown: Vec<(&'static str, Option<String>)> = vec![
                $( $( (stringify!($rf), declare!(@shown run.$rf ; $rdef $(=> $rshown)?)), )? )*
                $( $( (stringify!($sf), declare!(@shown stream.$sf ; $sdef $(=> $sshown)?)), )? )*
            ];
            shown.into_iter().filter_map(|(id, s)| Some((id, s?))).collect()
        }
    };
}
