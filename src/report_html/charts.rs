//! The page's charts, drawn with `plotters` to inline SVG (text as SVG `<text>`, so no font is
//! needed to draw and the browser renders it): stacked bars of messages per UTC day and
//! channel, line charts over the run's time, horizontal bars of the largest users.

use std::collections::BTreeMap;

use plotters::prelude::*;

/// Width and height of a chart, pixels.
pub const SIZE: (u32, u32) = (960, 340);

/// Colours of series, in order.
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type DrawResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A line of a line chart.
pub struct Line<'a> {
    /// Legend label.
    pub label: &'a str,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 { 1.0 } else { v * 1.1 }
}

/// Draws a line chart; the SVG text.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, series: &[Line<'_>]) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_lines(&mut svg, title, x_desc, y_desc, series) {
        return failed(title, &e);
    }
    svg
}

fn draw_lines(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Line<'_>],
) -> DrawResult<()> {
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || series.iter().flat_map(|s| s.points.iter());
    let max_x = all().map(|p| p.0).fold(1.0_f64, f64::max);
    let max_y = nice_max(all().map(|p| p.1).fold(0.0_f64, f64::max));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()?;
    Ok(())
}

/// Stacked bars: one bar per category (x), one segment per group, counts on y.
pub fn stacked_bars(title: &str, y_desc: &str, counts: &BTreeMap<(String, String), u64>) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_stacked(&mut svg, title, y_desc, counts) {
        return failed(title, &e);
    }
    svg
}

fn draw_stacked(
    svg: &mut String,
    title: &str,
    y_desc: &str,
    counts: &BTreeMap<(String, String), u64>,
) -> DrawResult<()> {
    let (days, groups, max_total) = axes(counts);
    let max_y = nice_max(max_total as f64);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let n = days.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n as f64, 0.0..max_y)?;
    let label_every = n.div_ceil(12).max(1);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(n.min(12) + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if i < days.len() && i.is_multiple_of(label_every) && (x - x.floor()).abs() < 1e-9 {
                days[i][5..].to_owned()
            } else {
                String::new()
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let mut base = vec![0u64; days.len()];
    for (gi, g) in groups.iter().enumerate() {
        let color = PALETTE[gi % PALETTE.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = days
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let v = counts
                    .get(&((*d).into(), (*g).into()))
                    .copied()
                    .unwrap_or(0);
                let (lo, hi) = (base[i], base[i] + v);
                base[i] = hi;
                let x = i as f64;
                Rectangle::new([(x + 0.1, lo as f64), (x + 0.9, hi as f64)], color.filled())
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(*g)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()?;
    root.present()?;
    Ok(())
}

/// The categories (x), the groups, and the largest stacked total.
fn axes(counts: &BTreeMap<(String, String), u64>) -> (Vec<&str>, Vec<&str>, u64) {
    let mut days: Vec<&str> = counts.keys().map(|(d, _)| d.as_str()).collect();
    days.dedup();
    let mut groups: Vec<&str> = counts.keys().map(|(_, g)| g.as_str()).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for ((d, _), v) in counts {
        *totals.entry(d.as_str()).or_default() += v;
    }
    let max = totals.values().copied().max().unwrap_or(0);
    (days, groups, max)
}

/// Horizontal bars of (label, value), the largest on top.
pub fn horizontal_bars(title: &str, x_desc: &str, items: &[(String, u64)]) -> String {
    let mut svg = String::new();
    if let Err(e) = draw_horizontal(&mut svg, title, x_desc, items) {
        return failed(title, &e);
    }
    svg
}

fn draw_horizontal(
    svg: &mut String,
    title: &str,
    x_desc: &str,
    items: &[(String, u64)],
) -> DrawResult<()> {
    let n = items.len().max(1);
    let height = (60 + 24 * n as u32).max(160);
    let root = SVGBackend::with_string(svg, (SIZE.0, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_x = nice_max(items.iter().map(|i| i.1).max().unwrap_or(0) as f64);
    let labels: Vec<String> = items.iter().map(|(l, _)| short(l)).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(260)
        .build_cartesian_2d(0.0..max_x, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&|y| {
            let slot = y - 0.5;
            let i = slot.round();
            if (slot - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[labels.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let color = PALETTE[0];
    chart.draw_series(items.iter().enumerate().map(|(i, (_, v))| {
        let y = (n - 1 - i) as f64;
        Rectangle::new([(0.0, y + 0.15), (*v as f64, y + 0.85)], color.filled())
    }))?;
    root.present()?;
    Ok(())
}

/// A label of at most 34 chars.
fn short(s: &str) -> String {
    if s.chars().count() <= 34 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(33).collect::<String>())
    }
}

/// What stands in for a chart that could not be drawn.
fn failed(title: &str, e: &dyn std::fmt::Display) -> String {
    format!(
        "<p class=\"chart-error\">{}: could not draw the chart ({})</p>",
        html_escape::encode_text(title),
        html_escape::encode_text(&e.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_titles() {
        let svg = lines(
            "Requests per second",
            "s",
            "req/s",
            &[Line {
                label: "2xx",
                points: vec![(0.0, 1.0), (1.0, 3.0)],
            }],
        );
        assert!(
            svg.starts_with("<svg") && svg.contains("Requests per second"),
            "{svg}"
        );
        let mut counts = BTreeMap::new();
        counts.insert(("2026-08-01".to_owned(), "whatsapp".to_owned()), 5);
        counts.insert(("2026-08-01".to_owned(), "web".to_owned()), 2);
        counts.insert(("2026-08-02".to_owned(), "web".to_owned()), 4);
        let svg = stacked_bars("Messages per day", "messages", &counts);
        assert!(svg.starts_with("<svg") && svg.contains("whatsapp"), "{svg}");
        let svg = horizontal_bars(
            "Largest users",
            "messages",
            &[("u1".into(), 3), ("u2".into(), 1)],
        );
        assert!(svg.starts_with("<svg") && svg.contains("u1"), "{svg}");
    }
}
