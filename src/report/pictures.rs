//! The pictures a run leaves in its folder: metric curves, the confusion matrix and misclassified
//! digits of a classifier, the lowest-Dice segmentations.

use super::{plot, EpochRecord, History};
use crate::data::Dataset;
use crate::error::Result;
use std::path::Path;

/// `loss.png` and `<metric>.png`: train and test per epoch.
pub fn write_curves(out: &Path, h: &History) -> Result<()> {
    let col = |f: fn(&EpochRecord) -> f64| h.epochs.iter().map(f).collect::<Vec<_>>();
    let (loss, test_loss) = (col(|e| e.loss), col(|e| e.test_loss));
    plot::curves(
        &out.join("loss.png"),
        &format!("{}: loss", h.task),
        "loss",
        &[("train", &loss), ("test", &test_loss)],
    )?;
    let (metric, test_metric) = (col(|e| e.metric), col(|e| e.test_metric));
    let title = format!("{}: {}", h.task, h.metric);
    plot::curves(
        &out.join(format!("{}.png", h.metric)),
        &title,
        &h.metric,
        &[("train", &metric), ("test", &test_metric)],
    )
}

/// Dice of one predicted map `p` (probabilities) against a 0/1 mask `t`: 2Σtp / (Σt + Σp), 1
/// when both are empty (as the training metric).
pub fn dice(t: &[u8], p: &[f32]) -> f64 {
    let (tp, ts, ps) = t
        .iter()
        .zip(p)
        .fold((0.0, 0.0, 0.0), |(tp, ts, ps), (&t, &p)| (tp + t as f64 * p as f64, ts + t as f64, ps + p as f64));
    if ts + ps > 0.0 {
        2.0 * tp / (ts + ps)
    } else {
        1.0
    }
}

/// RGB bytes (row-major) of a `[3, h, w]` image.
fn rgb_of(chw: &[u8], hw: usize) -> Vec<u8> {
    (0..hw).flat_map(|i| [chw[i], chw[hw + i], chw[2 * hw + i]]).collect()
}

fn grey_rgb(values: impl Iterator<Item = u8>) -> Vec<u8> {
    values.flat_map(|v| [v, v, v]).collect()
}

/// `worst_<rank>.png` for the `count` test images with the lowest Dice: the image, the true map
/// and the predicted map (probability > 0.5) side by side, titled with the Dice.
pub fn worst_segmentations(out: &Path, data: &Dataset, probs: &[f32], count: usize) -> Result<()> {
    let (side, hw) = (data.sample.h, data.sample.h * data.sample.w);
    let mut scores: Vec<(usize, f64)> =
        (0..data.test.n).map(|i| (i, dice(&data.test.y[i * hw..][..hw], &probs[i * hw..][..hw]))).collect();
    scores.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (rank, &(i, d)) in scores.iter().take(count).enumerate() {
        let image = rgb_of(&data.test.x[i * 3 * hw..][..3 * hw], hw);
        let truth = grey_rgb(data.test.y[i * hw..][..hw].iter().map(|&t| t * 255));
        let pred = grey_rgb(probs[i * hw..][..hw].iter().map(|&p| if p > 0.5 { 255 } else { 0 }));
        let title = format!("test image {}: Dice {d:.3}", i + 1);
        let tiles = [(image, "image".into()), (truth, "true map".into()), (pred, "predicted map".into())];
        plot::grid(&out.join(format!("worst_{}.png", rank + 1)), &title, &tiles, side as u32, 2, 3)?;
    }
    Ok(())
}

/// `misclassified.png`: up to 32 test digits the model gets wrong, each with its true and
/// predicted label.
pub fn misclassified(out: &Path, data: &Dataset, probs: &[f32], k: usize) -> Result<()> {
    let per = data.sample.len();
    let side = (per as f64).sqrt() as u32;
    let argmax = |row: &[f32]| row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
    let wrong: Vec<(usize, usize)> = (0..data.test.n)
        .map(|i| (i, argmax(&probs[i * k..][..k])))
        .filter(|&(i, p)| p != data.test.y[i] as usize)
        .take(32)
        .collect();
    let tiles: Vec<(Vec<u8>, String)> = wrong
        .iter()
        .map(|&(i, p)| (grey_rgb(data.test.x[i * per..][..per].iter().copied()), format!("{} as {p}", data.test.y[i])))
        .collect();
    let title = format!("misclassified test digits (true as predicted): {} shown", tiles.len());
    plot::grid(&out.join("misclassified.png"), &title, &tiles, side, 3, 8)
}
