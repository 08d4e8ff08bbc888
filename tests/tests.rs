//! All integration tests, built into one binary (`autotests = false`).

mod util;

mod test_featurize;
mod test_layout;
mod test_parity;
mod test_pca;
mod test_s3;
mod test_weights;
