//! The chart: package size against diff time, one labelled point per row.

use crate::{Input, Report, Status};
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where fonts are looked for, in order; the first match wins.
const FONT_DIRS: [&str; 3] = [
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/usr/share/fonts/truetype",
];

/// Preferred font files, by file name.
const PREFERRED: [&str; 3] = [
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
    "FreeSans.ttf",
];

/// Finds a TrueType font on the system: a preferred sans-serif face if there
/// is one under the usual directories, else any `.ttf` there.
pub fn find_font() -> Option<PathBuf> {
    let mut all = Vec::new();
    for dir in FONT_DIRS {
        collect_ttf(Path::new(dir), 0, &mut all);
    }
    all.sort();
    PREFERRED
        .iter()
        .find_map(|name| {
            all.iter()
                .find(|p| p.file_name().is_some_and(|f| f == *name))
        })
        .or_else(|| all.first())
        .cloned()
}

fn collect_ttf(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && depth < 4 {
            collect_ttf(&p, depth + 1, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

/// Registers `font` as plotters' `sans-serif` (once per process); returns
/// whether text can be drawn.
fn register(font: &Path) -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let Ok(bytes) = std::fs::read(font) else {
            return false;
        };
        // plotters keeps registered fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// A colour per tool, the same in every chart.
fn colour(t: crate::Tool) -> RGBColor {
    match t {
        crate::Tool::Romdelta => RGBColor(200, 30, 30),
        crate::Tool::Bsdiff => RGBColor(120, 80, 30),
        crate::Tool::Xdelta3 => RGBColor(30, 110, 200),
        crate::Tool::Zstd19 => RGBColor(30, 150, 60),
        crate::Tool::Zstd22 => RGBColor(20, 90, 40),
        crate::Tool::HDiffPatch => RGBColor(140, 50, 170),
        crate::Tool::Hdiffz => RGBColor(210, 120, 20),
    }
}

/// Draws every finished row as a point (x: diff wall seconds, y: package
/// megabytes) into a PNG at `path`: circles for the full pair, triangles for
/// prefix reruns. With a `font`, points, axes and the title are labelled;
/// without one the chart has points and axes only.
pub fn write(report: &Report, path: &Path, font: Option<&Path>) -> anyhow::Result<()> {
    let text = font.is_some_and(register);
    let points: Vec<(f64, f64, String, crate::Tool, Input)> = report
        .rows
        .iter()
        .filter(|r| r.status == Status::Ok)
        .filter_map(|r| {
            let label = match r.input {
                Input::Full => r.tool.key().to_string(),
                Input::Prefix => format!("{} (256 MiB prefix)", r.tool.key()),
            };
            Some((
                r.diff_wall_s?,
                r.patch_bytes? as f64 / 1e6,
                label,
                r.tool,
                r.input,
            ))
        })
        .collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.15;
    let y_max = points.iter().map(|p| p.1).fold(0.1, f64::max) * 1.15;

    let root = BitMapBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(25);
    if text {
        builder
            .caption(
                format!(
                    "package size against diff time: {}",
                    Path::new(&report.target.path)
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
                ("sans-serif", 24),
            )
            .x_label_area_size(50)
            .y_label_area_size(80);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(plot_err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("diff wall time, s")
            .y_desc("package size, MB")
            .label_style(("sans-serif", 15));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(plot_err)?;

    // Labels go beside their point where they overlap no label placed before.
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    for (x, y, label, tool, input) in &points {
        let c = colour(*tool);
        let marker: DynElement<'_, _, (i32, i32)> = match input {
            Input::Full => Circle::new((0, 0), 6, c.filled()).into_dyn(),
            Input::Prefix => TriangleMarker::new((0, 0), 8, c.filled()).into_dyn(),
        };
        let element = EmptyElement::at((*x, *y)) + marker;
        if text {
            let (px, py) = chart.backend_coord(&(*x, *y));
            let offset = label_offset(&mut placed, (px, py), label);
            let element = element
                + plotters::element::Text::new(
                    label.clone(),
                    offset,
                    ("sans-serif", 15).into_font().color(&c),
                );
            chart
                .draw_series(std::iter::once(element))
                .map_err(plot_err)?;
        } else {
            chart
                .draw_series(std::iter::once(element))
                .map_err(plot_err)?;
        }
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

/// The first of a few offsets from the point at `at` where `label`'s box
/// (estimated at 8 px a character, 16 px high) overlaps no box in `placed`;
/// records the box it chose.
fn label_offset(placed: &mut Vec<(i32, i32, i32, i32)>, at: (i32, i32), label: &str) -> (i32, i32) {
    let (w, h) = (8 * label.chars().count() as i32, 16);
    let candidates = [
        (9, -20),
        (9, 6),
        (-9 - w, -20),
        (-9 - w, 6),
        (9, -38),
        (9, 24),
        (-9 - w, -38),
        (-9 - w, 24),
    ];
    let boxed = |(dx, dy): (i32, i32)| (at.0 + dx, at.1 + dy, at.0 + dx + w, at.1 + dy + h);
    let free = |b: (i32, i32, i32, i32)| {
        placed
            .iter()
            .all(|p| b.2 <= p.0 || p.2 <= b.0 || b.3 <= p.1 || p.3 <= b.1)
    };
    let chosen = candidates
        .into_iter()
        .find(|&o| free(boxed(o)))
        .unwrap_or(candidates[0]);
    placed.push(boxed(chosen));
    chosen
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
