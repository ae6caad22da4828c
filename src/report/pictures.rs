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

/// Each pixel's predicted class from `probs` (`[k, hw]`; `k` 0: one probability of the
/// foreground per pixel, foreground above 0.5), the first most probable of ties.
pub fn predicted(probs: &[f32], k: usize, hw: usize) -> Vec<u8> {
    match k {
        0 => probs[..hw].iter().map(|&p| u8::from(p > 0.5)).collect(),
        _ => (0..hw)
            .map(|q| (1..k).fold(0, |b, c| if probs[c * hw + q] > probs[b * hw + q] { c } else { b }) as u8)
            .collect(),
    }
}

/// Distinct colours for class maps: black background, then well-separated hues.
const PALETTE: [[u8; 3]; 8] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
];

/// RGB bytes of a map of classes (`k` 0: white foreground on black).
fn map_rgb(map: &[u8], k: usize) -> Vec<u8> {
    map.iter()
        .flat_map(|&c| match k {
            0 => [255 * c; 3],
            _ => PALETTE[usize::from(c) % PALETTE.len()],
        })
        .collect()
}

/// `worst_<rank>.png` for the `count` test images with the lowest Dice: the image, the true map
/// and the predicted map side by side, titled with the Dice. `k`: the classes of pixels (0: one
/// binary mask, scored with its probabilities as the training metric; else the mean of each
/// present class's Dice of the predicted classes).
pub fn worst_segmentations(out: &Path, data: &Dataset, probs: &[f32], k: usize, count: usize) -> Result<()> {
    let (side, hw) = (data.sample.h, data.sample.h * data.sample.w);
    let per = k.max(1) * hw;
    let truth = |i: usize| &data.test.y[i * hw..][..hw];
    let score = |i: usize| match k {
        0 => dice(truth(i), &probs[i * hw..][..hw]),
        _ => {
            let p = predicted(&probs[i * per..][..per], k, hw);
            let counts = (0..k as u8).map(|c| {
                let (t, q) = (truth(i).iter().map(|&v| v == c), p.iter().map(|&v| v == c));
                t.zip(q).fold([0.0; 3], |[b, t, q], (x, y)| {
                    [b + f64::from(u8::from(x && y)), t + f64::from(u8::from(x)), q + f64::from(u8::from(y))]
                })
            });
            crate::graph::slot::mean_dice(counts)
        }
    };
    let mut scores: Vec<(usize, f64)> = (0..data.test.n).map(|i| (i, score(i))).collect();
    scores.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (rank, &(i, d)) in scores.iter().take(count).enumerate() {
        let image = rgb_of(&data.test.x[i * 3 * hw..][..3 * hw], hw);
        let pred = map_rgb(&predicted(&probs[i * per..][..per], k, hw), k);
        let title = format!("test image {}: Dice {d:.3}", i + 1);
        let tiles =
            [(image, "image".into()), (map_rgb(truth(i), k), "true map".into()), (pred, "predicted map".into())];
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
