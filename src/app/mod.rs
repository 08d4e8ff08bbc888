//! The app's engine on top of the features: [`index`] turns labelled
//! features into an exact nearest-neighbour classifier, [`identify`]
//! answers a photo with it (the CLI, `index eval` and `serve` all through
//! it), [`fruit_info`] says what the fruit is, [`serve`] answers over HTTP.
//!
//! This file only declares: the children never import through it.

pub mod fruit_info;
pub mod identify;
pub mod index;
pub mod serve;
