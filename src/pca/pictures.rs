//! The PCA's pictures, as SVG: the explained variance (scree and
//! cumulative curve) and a scatter of the first two reduced components.

use std::path::Path;

use plotters::prelude::*;

use super::maths::Pca;

pub type PlotResult = std::result::Result<(), crate::error::BoxError>;

/// Scree plot (ratio per component) and cumulative curve, with k marked.
pub fn plot_explained_variance(pca: &Pca, path: &Path) -> PlotResult {
    let k = pca.n_components();
    let ratio = pca.ratio_all();
    let cumulative = pca.cumulative_ratio_all();
    let shown = ratio.len().min((2 * k).max(50));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let kept = cumulative[k - 1];
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("PCA: {k} of {} components keep {:.1}% of the variance", pca.n_features(), 100.0 * kept),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..shown as f64 + 0.5, 0f64..1.02f64)?;
    chart
        .configure_mesh()
        .x_desc("component")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("explained variance ratio")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .draw()?;
    let per: Vec<(f64, f64)> = (0..shown).map(|i| ((i + 1) as f64, ratio[i])).collect();
    let cum: Vec<(f64, f64)> = (0..shown).map(|i| ((i + 1) as f64, cumulative[i])).collect();
    chart
        .draw_series(LineSeries::new(per.clone(), BLUE.stroke_width(2)))?
        .label("per component")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    chart.draw_series(per.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
    chart
        .draw_series(LineSeries::new(cum, RED.stroke_width(2)))?
        .label("cumulative")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    let kx = k as f64;
    chart
        .draw_series(LineSeries::new(vec![(kx, 0.0), (kx, 1.02)], BLACK.stroke_width(1)))?
        .label(format!("k = {k}"))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    chart.draw_series(std::iter::once(Circle::new((kx, kept), 6, BLACK.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// First two components, one colour per label, with a legend. At most
/// `MAX_POINTS` points are drawn (an even stride through the rows).
pub fn plot_scatter(points: &[(f32, f32, Option<String>)], path: &Path) -> PlotResult {
    const MAX_POINTS: usize = 20_000;
    let stride = points.len().div_ceil(MAX_POINTS).max(1);
    let shown: Vec<&(f32, f32, Option<String>)> = points.iter().step_by(stride).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for (x, y, _) in &shown {
        (x0, x1, y0, y1) = (x0.min(*x), x1.max(*x), y0.min(*y), y1.max(*y));
    }
    let pad = |a: f32, b: f32| ((b - a) * 0.05).max(1e-3);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let mut labels: Vec<String> = shown.iter().map(|p| p.2.clone().unwrap_or_else(|| "(none)".into())).collect();
    labels.sort();
    labels.dedup();
    let root = SVGBackend::new(path, (1100, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend gets its own column, so it never hides points, and stays
    // readable with Fruits-360's 100+ labels (the first ones, then a count).
    let (plot_area, legend_area) = root.split_horizontally(860);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(format!("PCA: first two components, {} images", points.len()), ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - px) as f64..(x1 + px) as f64, (y0 - py) as f64..(y1 + py) as f64)?;
    chart
        .configure_mesh()
        .x_desc("PC1")
        .y_desc("PC2")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 14))
        .draw()?;
    const LEGEND_ROWS: usize = 30;
    for (i, label) in labels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = shown
            .iter()
            .filter(|p| p.2.as_deref().unwrap_or("(none)") == label)
            .map(|p| (p.0 as f64, p.1 as f64))
            .collect();
        chart.draw_series(pts.into_iter().map(move |p| Circle::new(p, 4, color.filled())))?;
        if i < LEGEND_ROWS {
            let y = 70 + 20 * i as i32;
            legend_area.draw(&Circle::new((20, y), 5, color.filled()))?;
            legend_area.draw(&Text::new(label.clone(), (32, y - 8), ("sans-serif", 15)))?;
        }
    }
    if labels.len() > LEGEND_ROWS {
        let y = 70 + 20 * LEGEND_ROWS as i32;
        legend_area.draw(&Text::new(
            format!("... and {} more labels", labels.len() - LEGEND_ROWS),
            (12, y - 8),
            ("sans-serif", 15),
        ))?;
    }
    root.present()?;
    Ok(())
}
