//! [`png()`]: a run's timeline as a PNG of four panels over time: queue depth (with the
//! watermarks), throughput, downstream overload errors, producer backpressure signals.
//!
//! plotters draws into an RGB buffer (its bitmap backend, without its `image`-based file
//! encoder) and the `png` crate encodes it. Text uses the DejaVu Sans subset bundled in
//! `assets/` through plotters' `ab_glyph` feature, so no system font library or font file is
//! needed (docs/decisions/0013-plotting.md).

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::workload::Run;

/// The width of a plot, in pixels.
pub const WIDTH: u32 = 1000;
/// The height of a plot, in pixels.
pub const HEIGHT: u32 = 1240;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");
const FAMILY: &str = "sans-serif";

/// Why a plot could not be drawn.
pub type PlotError = Box<dyn std::error::Error + Send + Sync>;

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(110, 110, 110);

/// One line of a panel.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    /// Dashed lines mark limits (watermarks, capacity) rather than measurements.
    dashed: bool,
}

impl Line {
    fn measured(label: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Line {
            label: label.to_owned(),
            color,
            points,
            dashed: false,
        }
    }

    fn limit(label: String, color: RGBColor, value: f64, x_max: f64) -> Self {
        Line {
            label,
            color,
            points: vec![(0.0, value), (x_max, value)],
            dashed: true,
        }
    }
}

/// The run's timeline as a PNG file's bytes.
pub fn png(run: &Run) -> Result<Vec<u8>, PlotError> {
    register()?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    draw(run, &mut rgb).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Registers the bundled font with plotters, once per process.
fn register() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err("the bundled font did not load".into())
    }
}

fn draw<'b>(run: &Run, rgb: &'b mut [u8]) -> Result<(), Box<dyn std::error::Error + 'b>> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(70);
    let s = &run.summary;
    header.draw(&Text::new(
        format!(
            "W5 slow downstream, backpressure {}",
            if run.scenario.backpressure {
                "ON"
            } else {
                "OFF"
            }
        ),
        (20, 10),
        (FAMILY, 24).into_font(),
    ))?;
    header.draw(&Text::new(
        format!(
            "offered {}, accepted {}, completed {}, lost {}, downstream 503s {}, producer refusals {}",
            s.offered, s.accepted, s.completed, s.lost, s.downstream_refused, s.producer_refusals
        ),
        (20, 42),
        (FAMILY, 15).into_font().color(&GREY),
    ))?;

    let timeline = &run.timeline;
    let x_max = timeline
        .samples
        .last()
        .map_or(1.0, |s| s.at.as_secs_f64())
        .max(1.0);
    let rows = |value: fn(&crate::timeline::Row) -> u64| {
        timeline
            .rows
            .iter()
            .map(|r| (r.at, value(r) as f64))
            .collect::<Vec<_>>()
    };
    let panels = body.split_evenly((4, 1));
    let stop = Some(run.scenario.offer_for.as_secs_f64());

    let mut depth = vec![Line::measured(
        "waiting tasks",
        BLUE,
        timeline
            .samples
            .iter()
            .map(|s| (s.at.as_secs_f64(), s.depth as f64))
            .collect(),
    )];
    if let Some(marks) = run.scenario.queue.watermarks {
        depth.push(Line::limit(
            format!("high watermark {}", marks.high),
            RED,
            marks.high as f64,
            x_max,
        ));
        depth.push(Line::limit(
            format!("low watermark {}", marks.low),
            ORANGE,
            marks.low as f64,
            x_max,
        ));
    }
    panel(
        &panels[0],
        "Queue depth (tasks waiting)",
        x_max,
        stop,
        &depth,
    )?;

    let mut throughput = vec![
        Line::measured("enqueued/s", GREY, rows(|r| r.accepted)),
        Line::measured("completed/s", BLUE, rows(|r| r.completed)),
        Line::measured(
            "downstream successes/s",
            GREEN,
            rows(|r| r.downstream_served),
        ),
        Line::limit(
            format!("downstream capacity {}/s", run.scenario.downstream.rate),
            RED,
            run.scenario.downstream.rate,
            x_max,
        ),
    ];
    if let Some(limit) = run.scenario.queue.rate_limit {
        throughput.push(Line::limit(
            format!("queue rate limit {}/s", limit.rate),
            ORANGE,
            limit.rate,
            x_max,
        ));
    }
    panel(
        &panels[1],
        "Throughput (per second)",
        x_max,
        stop,
        &throughput,
    )?;

    panel(
        &panels[2],
        "Downstream overload errors (503s per second)",
        x_max,
        stop,
        &[Line::measured(
            "downstream 503s/s",
            RED,
            rows(|r| r.downstream_refused),
        )],
    )?;
    panel(
        &panels[3],
        "Producer backpressure signals (refused enqueue calls per second)",
        x_max,
        stop,
        &[Line::measured(
            "refused enqueue calls/s",
            PURPLE,
            rows(|r| r.producer_refusals),
        )],
    )?;
    root.present()?;
    Ok(())
}

/// Draws one panel: `lines` over `0..x_max` seconds, with a vertical mark where the offers
/// stopped.
fn panel<'a>(
    area: &DrawingArea<BitMapBackend<'a>, Shift>,
    title: &str,
    x_max: f64,
    offers_stop: Option<f64>,
    lines: &[Line],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let y_top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // Headroom for the legend, and a visible axis even when nothing happened.
    let y_max = (y_top * 1.25).max(10.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(235, 235, 235))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;
    if let Some(x) = offers_stop.filter(|x| *x < x_max) {
        chart
            .draw_series(DashedLineSeries::new(
                [(x, 0.0), (x, y_max)],
                4,
                4,
                GREY.stroke_width(1),
            ))?
            .label("offers stop")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], GREY.stroke_width(1)));
    }
    for line in lines {
        let color = line.color;
        let style = color.stroke_width(2);
        let drawn = if line.dashed {
            chart.draw_series(DashedLineSeries::new(
                line.points.iter().copied(),
                8,
                6,
                style,
            ))?
        } else {
            chart.draw_series(LineSeries::new(line.points.iter().copied(), style))?
        };
        drawn.label(line.label.as_str()).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
