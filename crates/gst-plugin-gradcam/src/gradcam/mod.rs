//! The `gradcam` element: its public type and registration; the subclass is in `imp`.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;

mod imp;
mod properties;

glib::wrapper! {
    pub struct GradCam(ObjectSubclass<imp::GradCam>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "gradcam",
        gst::Rank::NONE,
        GradCam::static_type(),
    )
}
