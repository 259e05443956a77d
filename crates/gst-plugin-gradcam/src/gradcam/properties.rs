//! The element's properties, generated from the program's declared settings (`settings.rs`):
//! each property sets one declared setting, and takes from its declaration the type, the
//! default, the range and the help; an enumerated setting is a GEnum property, so
//! `gst-inspect-1.0 gradcam` lists its values and a bad one is refused when it is set. The
//! values are checked by the program's own `engine::Settings::try_from`, so the two front
//! ends cannot drift. Never touches a pad or a frame: that is `imp.rs`.

use std::any::Any;
use std::path::PathBuf;

use gradcam_stream::config::{
    BoxMaps, ClassValue, Colormap, DeviceChoice, Layout, MethodChoice, Precision, DEFAULT_MODEL,
};
use gradcam_stream::engine;
use gradcam_stream::render::Look;
use gradcam_stream::settings::{
    self as declared, PerStream, Run, Scope, ELEMENT_PROPERTIES as DECLARED,
};
use gstreamer::glib;
use gstreamer::prelude::*;

/// Calls `$f` with the setting as the `Prop` it is (`$as`: `downcast_ref` or `downcast_mut`);
/// a declared type the element does not take is a programming error caught by the properties
/// test.
macro_rules! dispatch {
    ($any:expr, $as:ident, |$v:ident| $f:expr) => {
        dispatch!(@try $any, $as, $v, $f; usize, u64, f32, bool, PathBuf,
            DeviceChoice, Precision, Layout, MethodChoice, Colormap, BoxMaps)
    };
    (@try $any:expr, $as:ident, $v:ident, $f:expr; $($t:ty),*) => {{
        let any = $any;
        $( if let Some($v) = any.$as::<$t>() { $f } else )*
        { panic!("a declared setting of a type the element has no property for") }
    }};
}

/// The properties, as set; read at NULL→READY.
#[derive(Debug, Clone)]
pub struct Settings {
    pub run: Run,
    pub stream: PerStream,
    /// The class to explain (an id or a name; empty: each frame's top-1).
    pub class: String,
    pub post_messages: bool,
}

impl Default for Settings {
    /// The declared defaults; the model is the plain relative path, since an element has no
    /// binary to look beside.
    fn default() -> Self {
        Settings {
            run: Run {
                model: DEFAULT_MODEL.into(),
                ..Run::default()
            },
            stream: PerStream::default(),
            class: String::new(),
            post_messages: false,
        }
    }
}

impl Settings {
    fn field(&self, setting: &str, scope: Scope) -> &dyn Any {
        match scope {
            Scope::Run => self.run.field(setting),
            Scope::Stream => self.stream.field(setting),
        }
        .expect("a declared setting")
    }

    fn field_mut(&mut self, setting: &str, scope: Scope) -> &mut dyn Any {
        match scope {
            Scope::Run => self.run.field_mut(setting),
            Scope::Stream => self.stream.field_mut(setting),
        }
        .expect("a declared setting")
    }

    /// A property's value.
    pub fn get(&self, property: &str) -> Option<glib::Value> {
        match property {
            "class" => return Some(self.class.to_value()),
            "post-messages" => return Some(self.post_messages.to_value()),
            _ => {}
        }
        let &(_, setting, scope, _) = DECLARED.iter().find(|d| d.0 == property)?;
        Some(dispatch!(self.field(setting, scope), downcast_ref, |v| {
            Prop::value(v)
        }))
    }

    /// Set a property (its type was checked by GObject, its range too).
    pub fn set(&mut self, property: &str, value: &glib::Value) {
        match property {
            "class" => {
                self.class = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            }
            "post-messages" => self.post_messages = value.get().unwrap_or(false),
            _ => {
                let Some(&(_, setting, scope, _)) = DECLARED.iter().find(|d| d.0 == property)
                else {
                    return;
                };
                dispatch!(self.field_mut(setting, scope), downcast_mut, |v| Prop::set(
                    v, value
                ));
            }
        }
    }

    /// The engine's settings and the renderer's look, every value checked by the program's
    /// own checks.
    pub fn resolve(&self) -> Result<(engine::Settings, Look), BadProperty> {
        let mut settings = engine::Settings::try_from(&self.run).map_err(|e| flag_error(&e.0))?;
        let class = match self.class.trim() {
            "" => None,
            c => Some(ClassValue::Name(c.to_owned())),
        };
        let stream = settings
            .stream(class, self.stream.smooth, true)
            .map_err(|e| flag_error(&e.0))?;
        (settings.class, settings.smooth) = (stream.class, stream.smooth);
        if !settings.model.is_file() {
            return Err(bad(
                "model",
                format!(
                    "model {} does not exist; give model=PATH to a TorchScript file exported by scripts/export_model.py (with its .json sidecar beside it)",
                    settings.model.display()
                ),
            ));
        }
        let look = Look::from(&self.run);
        Ok((settings, look))
    }
}

/// Every property: the declared ones, then the element's own.
pub fn specs() -> Vec<glib::ParamSpec> {
    let d = Settings::default();
    let mut all: Vec<glib::ParamSpec> = DECLARED
        .iter()
        .map(|&(name, setting, scope, own)| {
            let doc = own
                .map(str::to_owned)
                .unwrap_or_else(|| help(declared::doc(setting).expect("a declared setting")));
            let bounds = declared::bounds(setting);
            dispatch!(d.field(setting, scope), downcast_ref, |v| Prop::spec(
                v, name, &doc, bounds
            ))
        })
        .collect();
    all.push(
        glib::ParamSpecString::builder("class")
            .nick("class")
            .blurb(&help(declared::doc("class").expect("declared")))
            .default_value(Some(""))
            .mutable_ready()
            .build(),
    );
    all.push(
        glib::ParamSpecBoolean::builder("post-messages")
            .nick("post-messages")
            .blurb("Post an element message `gradcam` for each frame (class, label, probability, box, map)")
            .default_value(false)
            .mutable_playing()
            .build(),
    );
    all
}

/// A declaration's doc as one line (the `///` lines each start with a space).
fn help(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a property of a declared type is to GObject: its spec, its value, and how it is set.
trait Prop: Any {
    fn spec(&self, name: &str, blurb: &str, bounds: Option<(f64, f64, bool)>) -> glib::ParamSpec;
    fn value(&self) -> glib::Value;
    fn set(&mut self, v: &glib::Value);
}

/// A declared range as a GObject property's, whose ranges include both ends: an open end is
/// taken one hundredth inside.
fn closed((lo, hi, inclusive): (f64, f64, bool)) -> (f64, f64) {
    (lo, if inclusive { hi } else { hi - 0.01 })
}

macro_rules! unsigned {
    ($($t:ty),*) => { $(
        impl Prop for $t {
            fn spec(&self, name: &str, blurb: &str, bounds: Option<(f64, f64, bool)>) -> glib::ParamSpec {
                let (lo, hi) = bounds.map(closed).unwrap_or((0.0, u32::MAX.into()));
                glib::ParamSpecUInt::builder(name)
                    .nick(name)
                    .blurb(blurb)
                    .minimum(lo as u32)
                    .maximum(hi as u32)
                    .default_value(*self as u32)
                    .mutable_ready()
                    .build()
            }
            fn value(&self) -> glib::Value {
                (*self as u32).to_value()
            }
            fn set(&mut self, v: &glib::Value) {
                if let Ok(n) = v.get::<u32>() {
                    *self = n as $t;
                }
            }
        }
    )* };
}
unsigned!(usize, u64);

impl Prop for f32 {
    fn spec(&self, name: &str, blurb: &str, bounds: Option<(f64, f64, bool)>) -> glib::ParamSpec {
        let (lo, hi) = bounds.map(closed).unwrap_or((f64::MIN, f64::MAX));
        glib::ParamSpecDouble::builder(name)
            .nick(name)
            .blurb(blurb)
            .minimum(lo)
            .maximum(hi)
            .default_value((*self).into())
            .mutable_ready()
            .build()
    }
    fn value(&self) -> glib::Value {
        f64::from(*self).to_value()
    }
    fn set(&mut self, v: &glib::Value) {
        if let Ok(x) = v.get::<f64>() {
            *self = x as f32;
        }
    }
}

impl Prop for bool {
    fn spec(&self, name: &str, blurb: &str, _: Option<(f64, f64, bool)>) -> glib::ParamSpec {
        glib::ParamSpecBoolean::builder(name)
            .nick(name)
            .blurb(blurb)
            .default_value(*self)
            .mutable_ready()
            .build()
    }
    fn value(&self) -> glib::Value {
        self.to_value()
    }
    fn set(&mut self, v: &glib::Value) {
        if let Ok(b) = v.get::<bool>() {
            *self = b;
        }
    }
}

impl Prop for PathBuf {
    fn spec(&self, name: &str, blurb: &str, _: Option<(f64, f64, bool)>) -> glib::ParamSpec {
        glib::ParamSpecString::builder(name)
            .nick(name)
            .blurb(blurb)
            .default_value(self.to_str())
            .mutable_ready()
            .build()
    }
    fn value(&self) -> glib::Value {
        self.to_str().to_value()
    }
    fn set(&mut self, v: &glib::Value) {
        *self = v
            .get::<Option<String>>()
            .ok()
            .flatten()
            .unwrap_or_default()
            .into();
    }
}

macro_rules! enumerated {
    ($($t:ty),*) => { $(
        impl Prop for $t {
            fn spec(&self, name: &str, blurb: &str, _: Option<(f64, f64, bool)>) -> glib::ParamSpec {
                glib::ParamSpecEnum::builder_with_default(name, *self)
                    .nick(name)
                    .blurb(blurb)
                    .mutable_ready()
                    .build()
            }
            fn value(&self) -> glib::Value {
                self.to_value()
            }
            fn set(&mut self, v: &glib::Value) {
                if let Ok(x) = v.get::<$t>() {
                    *self = x;
                }
            }
        }
    )* };
}
enumerated!(
    DeviceChoice,
    Precision,
    Layout,
    MethodChoice,
    Colormap,
    BoxMaps
);

/// A property's bad value: its name and the one line that says what to do.
#[derive(Debug)]
pub struct BadProperty {
    pub property: &'static str,
    pub message: String,
}

impl std::fmt::Display for BadProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "property `{}`: {}", self.property, self.message)
    }
}

pub fn bad(property: &'static str, message: impl Into<String>) -> BadProperty {
    BadProperty {
        property,
        message: message.into(),
    }
}

/// A message of the program's (a check, loading the model, a class against it…) as a
/// property's: the property is the first whose flag (`--name`) it quotes, else `model`; each
/// flag reads as the property (`--show-rank 2` as `show-rank=2`).
pub fn flag_error(text: &str) -> BadProperty {
    let properties: Vec<&'static str> = DECLARED.iter().map(|d| d.0).chain(["class"]).collect();
    let mut property = None;
    let mut message = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("--") {
        message.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        let Some(&p) = properties.iter().find(|p| **p == &after[..len]) else {
            message.push_str("--");
            rest = after;
            continue;
        };
        property.get_or_insert(p);
        message.push_str(p);
        rest = &after[len..];
        // A value after it (`--show-rank 2`, `--class `x``) is the property's: `name=value`.
        if let Some(v) = rest.strip_prefix(' ') {
            if v.starts_with(|c: char| c.is_ascii_digit() || c == '`' || c == '-') {
                message.push('=');
                rest = v;
            }
        }
    }
    message.push_str(rest);
    bad(property.unwrap_or("model"), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every property against its declaration: the type, the default, the range and the help
    /// are the program's, and an enumerated one lists exactly the declared values.
    #[test]
    fn every_property_is_its_declared_setting() {
        gstreamer::init().expect("gstreamer");
        let d = Settings::default();
        for spec in specs() {
            let name = spec.name();
            let Some(&(_, setting, scope, own)) = DECLARED.iter().find(|x| x.0 == name) else {
                assert!(["class", "post-messages"].contains(&name), "{name}");
                continue;
            };
            let default = spec.default_value();
            let declared = d.get(name).expect("a value");
            assert_eq!(
                format!("{default:?}"),
                format!("{declared:?}"),
                "{name}'s default"
            );
            if own.is_none() {
                assert_eq!(
                    spec.blurb(),
                    Some(help(declared::doc(setting).expect("doc")).as_str())
                );
            }
            if let Some(range) = declared::bounds(setting) {
                let (lo, hi) = closed(range);
                let (min, max) = if let Some(p) = spec.downcast_ref::<glib::ParamSpecUInt>() {
                    (f64::from(p.minimum()), f64::from(p.maximum()))
                } else {
                    let p = spec
                        .downcast_ref::<glib::ParamSpecDouble>()
                        .expect("a number");
                    (p.minimum(), p.maximum())
                };
                assert_eq!((min, max), (lo, hi), "{name}'s range");
            }
            if let Some(e) = spec.downcast_ref::<glib::ParamSpecEnum>() {
                let nicks: Vec<String> = e
                    .enum_class()
                    .values()
                    .iter()
                    .map(|v| v.nick().to_owned())
                    .collect();
                let want = enum_names(d.field(setting, scope));
                assert_eq!(nicks, want, "{name}'s values");
            }
        }
        assert_eq!(specs().len(), DECLARED.len() + 2);
    }

    fn enum_names(any: &dyn Any) -> Vec<String> {
        use gradcam_stream::config::Named;
        fn names<T: Named>() -> Vec<String> {
            T::VALUES.iter().map(|v| v.name().to_owned()).collect()
        }
        macro_rules! of {
            ($($t:ty),*) => { $( if any.is::<$t>() { return names::<$t>(); } )* };
        }
        of!(
            DeviceChoice,
            Precision,
            Layout,
            MethodChoice,
            Colormap,
            BoxMaps
        );
        panic!("not an enumerated setting")
    }

    #[test]
    fn a_set_value_reads_back_and_reaches_the_run() {
        gstreamer::init().expect("gstreamer");
        let mut s = Settings::default();
        s.set("precision", &Precision::Fp32.to_value());
        s.set("batch-size", &3u32.to_value());
        s.set("alpha", &0.25f64.to_value());
        s.set("smooth", &0.5f64.to_value());
        s.set("box", &true.to_value());
        assert_eq!(s.run.precision, Precision::Fp32);
        assert_eq!((s.run.batch_size, s.run.alpha), (3, 0.25));
        assert_eq!((s.stream.smooth, s.run.draw_box), (0.5, true));
        assert_eq!(
            s.get("batch-size").and_then(|v| v.get::<u32>().ok()),
            Some(3)
        );
    }

    #[test]
    fn a_flag_in_a_message_reads_as_its_property() {
        let e =
            flag_error("--class `zebraa` is not a class of this model; close matches: zebra (340)");
        assert_eq!(e.property, "class");
        assert!(e.message.starts_with("class=`zebraa` is not"), "{e}");
        let e = flag_error("--box-maps full needs a detector; --box is not");
        assert_eq!(
            e.to_string(),
            "property `box-maps`: box-maps full needs a detector; box is not"
        );
        assert_eq!(flag_error("no such file").property, "model");
    }

    #[test]
    fn the_programs_rules_hold_for_the_element() {
        let mut s = Settings::default();
        s.run.top_k = 3;
        s.class = "5".into();
        let Err(e) = s.resolve() else { panic!("taken") };
        assert_eq!(e.property, "top-k", "{e}");
        assert!(e.to_string().contains("drop class, or top-k"), "{e}");
        let mut s = Settings::default();
        s.run.show_rank = 2;
        let Err(e) = s.resolve() else { panic!("taken") };
        assert_eq!(
            e.to_string(),
            "property `show-rank`: show-rank=2 is out of range; use 1 to top-k (1)"
        );
    }
}
