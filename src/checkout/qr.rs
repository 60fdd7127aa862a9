//! QR codes as SVG. Rendering costs ~0.8 ms, so each URI is rendered once and cached: a payment
//! URI never changes for a session, and a page view is then a map lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// At most this many SVGs are kept (a few KB each); the cache starts over when full.
const CAPACITY: usize = 20_000;

#[derive(Default)]
pub struct QrCache {
    map: Mutex<HashMap<String, Arc<String>>>,
}

impl QrCache {
    /// The SVG of `data`, rendered once.
    pub fn svg(&self, data: &str) -> Option<Arc<String>> {
        if let Some(s) = self.map.lock().ok()?.get(data) {
            return Some(s.clone());
        }
        let rendered = Arc::new(render(data)?);
        let mut m = self.map.lock().ok()?;
        if m.len() >= CAPACITY {
            m.clear();
        }
        m.insert(data.to_owned(), rendered.clone());
        Some(rendered)
    }
}

/// Medium error correction and a quiet zone: what phone cameras read reliably from a screen.
pub fn render(data: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color>()
            .min_dimensions(264, 264)
            .quiet_zone(true)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_caches() {
        let c = QrCache::default();
        let a = c
            .svg("upi://pay?pa=demo%40okbank&am=1.00&cu=INR")
            .expect("svg");
        assert!(a.starts_with("<?xml") || a.contains("<svg"));
        let b = c
            .svg("upi://pay?pa=demo%40okbank&am=1.00&cu=INR")
            .expect("svg");
        assert!(Arc::ptr_eq(&a, &b), "served from the cache");
    }
}
