//! PNG line charts. plotters draws the lines and points on its bitmap backend; text is
//! drawn here from the 8×8 bitmap font of the `font8x8` crate, so no font file, fontconfig
//! or freetype is needed (plotters' own text needs one).

use std::path::Path;

use font8x8::UnicodeFonts;
use plotters::prelude::*;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;
/// Pixels per font pixel.
const SCALE: i32 = 2;
const LEFT: i32 = 110;
const RIGHT: i32 = 30;
const TOP: i32 = 60;
const BOTTOM: i32 = 80;

pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Draws `text` with its top-left corner at (x, y).
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    s: &str,
    color: &RGBColor,
) -> anyhow::Result<()> {
    for (i, c) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                let px = x + (i as i32 * 8 + col) * SCALE;
                let py = y + row as i32 * SCALE;
                area.draw(&Rectangle::new(
                    [(px, py), (px + SCALE - 1, py + SCALE - 1)],
                    color.filled(),
                ))
                .map_err(|e| anyhow::anyhow!("drawing: {e}"))?;
            }
        }
    }
    Ok(())
}

fn text_width(s: &str) -> i32 {
    s.chars().count() as i32 * 8 * SCALE
}

/// A round step giving about `n` ticks over `span`.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn label(v: f64) -> String {
    if v.abs() >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

/// Writes a line chart of `series` (x from 0, y from 0) with a title, axis names, ticks
/// and a legend.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_name: &str,
    y_name: &str,
    series: &[Series],
) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(1e-3);
    let x_step = tick_step(x_max, 6.0);
    let y_step = tick_step(y_max, 6.0);
    let x_top = (x_max / x_step).ceil() * x_step;
    let y_top = (y_max * 1.05 / y_step).ceil() * y_step;

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let plot = root.margin(TOP as u32, BOTTOM as u32, LEFT as u32, RIGHT as u32);
    let mut chart = ChartBuilder::on(&plot)
        .build_cartesian_2d(0f64..x_top, 0f64..y_top)
        .map_err(err)?;
    let grey = RGBColor(220, 220, 220);
    let pos = |chart: &ChartContext<_, Cartesian2d<_, _>>, x: f64, y: f64| {
        let (px, py) = chart.backend_coord(&(x, y));
        (px, py)
    };
    // Grid and tick labels.
    let mut x = 0.0;
    while x <= x_top + x_step / 2.0 {
        chart
            .draw_series(LineSeries::new([(x, 0.0), (x, y_top)], grey))
            .map_err(err)?;
        let (px, py) = pos(&chart, x, 0.0);
        let l = label(x);
        text(&root, px - text_width(&l) / 2, py + 8, &l, &BLACK)?;
        x += x_step;
    }
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_top, y)], grey))
            .map_err(err)?;
        let (px, py) = pos(&chart, 0.0, y);
        let l = label(y);
        text(&root, px - text_width(&l) - 8, py - 8, &l, &BLACK)?;
        y += y_step;
    }
    chart
        .draw_series(LineSeries::new(
            [(0.0, y_top), (0.0, 0.0), (x_top, 0.0)],
            BLACK,
        ))
        .map_err(err)?;
    for s in series {
        chart
            .draw_series(LineSeries::new(s.points.clone(), s.color.stroke_width(2)))
            .map_err(err)?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&p| Circle::new(p, 4, s.color.filled())),
            )
            .map_err(err)?;
    }
    // Title, axis names, legend.
    let w = WIDTH as i32;
    text(&root, (w - text_width(title)) / 2, 8, title, &BLACK)?;
    text(
        &root,
        LEFT + (w - LEFT - RIGHT - text_width(x_name)) / 2,
        HEIGHT as i32 - 32,
        x_name,
        &BLACK,
    )?;
    text(&root, 8, TOP - 26, y_name, &BLACK)?;
    let mut ly = TOP + 8;
    for s in series {
        let lx = LEFT + 16;
        root.draw(&Rectangle::new(
            [(lx, ly + 4), (lx + 20, ly + 10)],
            s.color.filled(),
        ))
        .map_err(err)?;
        text(&root, lx + 28, ly, &s.name, &s.color)?;
        ly += 22;
    }
    root.present().map_err(err)?;
    Ok(())
}
