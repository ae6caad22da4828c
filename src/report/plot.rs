//! Pictures of a run: metric curves and segmentation panels, drawn with plotters into a pixel
//! buffer and saved as PNG (written to a temporary name and renamed).

use crate::error::{Error, Result};
use crate::files::write_png;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans-ASCII.ttf");

fn font_ready() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TTF"));
    });
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::bad_file(path, format!("cannot draw: {e}"))
}

/// Saves an RGB buffer of `w × h` as PNG.
fn save_rgb(path: &Path, rgb: Vec<u8>, (w, h): (u32, u32)) -> Result<()> {
    write_png(path, image::RgbImage::from_raw(w, h, rgb).expect("buffer of w·h·3 bytes"))
}

/// One line chart: each series `(name, values per epoch)`, epochs from 1 on the x axis.
pub fn curves(path: &Path, title: &str, y_label: &str, series: &[(&str, &[f64])]) -> Result<()> {
    font_ready();
    let (w, h) = (800u32, 500u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let epochs = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1).max(2);
        let finite = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo < hi { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(1.0..epochs as f64, (lo - pad)..(hi + pad))
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc(y_label)
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (i, (name, values)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = values.iter().enumerate().map(|(e, v)| (e as f64 + 1.0, *v));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| plot_error(path, e))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    save_rgb(path, rgb, (w, h))
}

/// A row of equally sized RGB panels (`side × side`, row-major RGB bytes each), each shown
/// `scale` times larger, under a title.
pub fn panels(path: &Path, title: &str, panels: &[Vec<u8>], side: u32, scale: u32) -> Result<()> {
    font_ready();
    let (gap, top) = (8u32, 36u32);
    let cell = side * scale;
    let (w, h) = (gap + panels.len() as u32 * (cell + gap), top + cell + gap);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.draw(&Text::new(title.to_string(), (gap as i32, 8), (FONT, 20).into_font().color(&BLACK)))
            .map_err(|e| plot_error(path, e))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    for (p, panel) in panels.iter().enumerate() {
        let x0 = gap + p as u32 * (cell + gap);
        for y in 0..cell {
            for x in 0..cell {
                let src = (((y / scale) * side + x / scale) * 3) as usize;
                let dst = (((top + y) * w + x0 + x) * 3) as usize;
                rgb[dst..dst + 3].copy_from_slice(&panel[src..src + 3]);
            }
        }
    }
    save_rgb(path, rgb, (w, h))
}
