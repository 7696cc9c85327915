//! PNG line charts. plotters draws the lines and points on its bitmap backend; text is
//! drawn here with ab_glyph, antialiased, from DejaVu Sans cut down to the characters the
//! charts use (`fonts/`, with its license), embedded in the binary: no font found on the
//! system, no fontconfig or freetype (plotters' own text needs them).

use std::path::Path;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::*;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 560;
const LEFT: i32 = 90;
const RIGHT: i32 = 30;
const TOP: i32 = 70;
const BOTTOM: i32 = 70;
/// Text sizes in pixels.
const TITLE: f32 = 22.0;
const LABEL: f32 = 16.0;
const TICK: f32 = 14.0;

static FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT).expect("the committed font parses")
}

pub struct Series {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Width of `s` at `size` pixels, kerning included.
fn text_width(s: &str, size: f32) -> i32 {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut last = None;
    for c in s.chars() {
        let id = scaled.glyph_id(c);
        if let Some(last) = last {
            width += scaled.kern(last, id);
        }
        width += scaled.h_advance(id);
        last = Some(id);
    }
    width.ceil() as i32
}

/// Draws `text` at `size` pixels with the top of its line at (x, y), each pixel blended
/// by its coverage.
fn text<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    s: &str,
    size: f32,
    color: &RGBColor,
) -> anyhow::Result<()> {
    let font = font();
    let scaled = font.as_scaled(PxScale::from(size));
    let baseline = y as f32 + scaled.ascent();
    let mut caret = x as f32;
    let mut last = None;
    let mut failed = None;
    for c in s.chars() {
        let id = scaled.glyph_id(c);
        if let Some(last) = last {
            caret += scaled.kern(last, id);
        }
        let glyph = id.with_scale_and_position(size, point(caret, baseline));
        caret += scaled.h_advance(id);
        last = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue; // a space
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            if coverage <= 0.0 || failed.is_some() {
                return;
            }
            let at = (
                bounds.min.x as i32 + gx as i32,
                bounds.min.y as i32 + gy as i32,
            );
            if let Err(e) = area.draw_pixel(at, &color.mix(coverage.min(1.0) as f64)) {
                failed = Some(e.to_string());
            }
        });
    }
    match failed {
        Some(e) => Err(anyhow::anyhow!("drawing text: {e}")),
        None => Ok(()),
    }
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
        text(
            &root,
            px - text_width(&l, TICK) / 2,
            py + 8,
            &l,
            TICK,
            &BLACK,
        )?;
        x += x_step;
    }
    let mut y = 0.0;
    while y <= y_top + y_step / 2.0 {
        chart
            .draw_series(LineSeries::new([(0.0, y), (x_top, y)], grey))
            .map_err(err)?;
        let (px, py) = pos(&chart, 0.0, y);
        let l = label(y);
        text(
            &root,
            px - text_width(&l, TICK) - 10,
            py - (TICK * 0.6) as i32,
            &l,
            TICK,
            &BLACK,
        )?;
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
    text(
        &root,
        (w - text_width(title, TITLE)) / 2,
        12,
        title,
        TITLE,
        &BLACK,
    )?;
    text(
        &root,
        LEFT + (w - LEFT - RIGHT - text_width(x_name, LABEL)) / 2,
        HEIGHT as i32 - 34,
        x_name,
        LABEL,
        &BLACK,
    )?;
    text(&root, 12, TOP - 30, y_name, LABEL, &BLACK)?;
    let mut ly = TOP + 10;
    for s in series {
        let lx = LEFT + 20;
        root.draw(&Rectangle::new(
            [(lx, ly + 7), (lx + 22, ly + 11)],
            s.color.filled(),
        ))
        .map_err(err)?;
        text(&root, lx + 30, ly, &s.name, LABEL, &s.color)?;
        ly += 24;
    }
    root.present().map_err(err)?;
    Ok(())
}
