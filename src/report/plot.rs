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
            .build_cartesian_2d(1..epochs as i32, (lo - pad)..(hi + pad))
            .map_err(|e| plot_error(path, e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .label_style((FONT, 14))
            .draw()
            .map_err(|e| plot_error(path, e))?;
        for (i, (name, values)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = values.iter().enumerate().map(|(e, v)| (e as i32 + 1, *v));
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

/// Tiles (`side × side` row-major RGB bytes each, shown `scale` times larger) in rows of
/// `columns`, each with a caption under it, below a title.
pub fn grid(
    path: &Path,
    title: &str,
    tiles: &[(Vec<u8>, String)],
    side: u32,
    scale: u32,
    columns: usize,
) -> Result<()> {
    font_ready();
    let (gap, top, caption) = (8u32, 36u32, 22u32);
    let cell = side * scale;
    let columns = columns.clamp(1, tiles.len().max(1)) as u32;
    let rows = (tiles.len() as u32).div_ceil(columns).max(1);
    let (w, h) = (gap + columns * (cell + gap), top + rows * (cell + caption + gap));
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let origin =
        |i: usize| (gap + (i as u32 % columns) * (cell + gap), top + (i as u32 / columns) * (cell + caption + gap));
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let text = |s: &str, x: u32, y: u32, size: u32| {
            root.draw(&Text::new(s.to_string(), (x as i32, y as i32), (FONT, size).into_font().color(&BLACK)))
        };
        text(title, gap, 8, 20).map_err(|e| plot_error(path, e))?;
        for (i, (_, label)) in tiles.iter().enumerate() {
            let (x, y) = origin(i);
            text(label, x, y + cell + 3, 15).map_err(|e| plot_error(path, e))?;
        }
        root.present().map_err(|e| plot_error(path, e))?;
    }
    for (i, (tile, _)) in tiles.iter().enumerate() {
        let (x0, y0) = origin(i);
        for y in 0..cell {
            for x in 0..cell {
                let src = (((y / scale) * side + x / scale) * 3) as usize;
                let dst = (((y0 + y) * w + x0 + x) * 3) as usize;
                rgb[dst..dst + 3].copy_from_slice(&tile[src..src + 3]);
            }
        }
    }
    save_rgb(path, rgb, (w, h))
}

/// A confusion matrix `counts[true·k + predicted]` as a heat map with the count in each cell.
pub fn confusion(path: &Path, title: &str, counts: &[f32], k: usize) -> Result<()> {
    font_ready();
    let (cell, left, top) = (52i32, 70i32, 70i32);
    let (w, h) = ((left + cell * k as i32 + 20) as u32, (top + cell * k as i32 + 50) as u32);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        let err = |e| plot_error(path, e);
        let font = |size: u32| (FONT, size).into_font().color(&BLACK);
        root.draw(&Text::new(title.to_string(), (left, 10), font(20))).map_err(err)?;
        root.draw(&Text::new("predicted", (left + cell * k as i32 / 2 - 35, 38), font(16))).map_err(err)?;
        root.draw(&Text::new("true", (8, top + cell * k as i32 / 2 - 8), font(16))).map_err(err)?;
        let max = counts.iter().fold(1.0f32, |m, &c| m.max(c));
        for t in 0..k {
            let y = top + t as i32 * cell;
            root.draw(&Text::new(t.to_string(), (left - 18, y + cell / 2 - 8), font(15))).map_err(err)?;
            root.draw(&Text::new(t.to_string(), (left + t as i32 * cell + cell / 2 - 4, top - 20), font(15)))
                .map_err(err)?;
            for p in 0..k {
                let c = counts[t * k + p];
                // Square-root shading so that the few mistakes stay visible beside the diagonal.
                let shade = (c / max).sqrt();
                let colour =
                    RGBColor(255 - (200.0 * shade) as u8, 255 - (120.0 * shade) as u8, 255 - (40.0 * shade) as u8);
                let x = left + p as i32 * cell;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], colour.filled())).map_err(err)?;
                root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], RGBColor(200, 200, 200))).map_err(err)?;
                let label = format!("{c:.0}");
                let tx = x + cell / 2 - 4 * label.len() as i32;
                let ink = if shade > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(label, (tx, y + cell / 2 - 8), (FONT, 14).into_font().color(&ink)))
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    save_rgb(path, rgb, (w, h))
}
