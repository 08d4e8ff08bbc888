//! All integration tests, built into one binary (`autotests = false`).

mod util;

mod test_append;
mod test_bad_inputs;
mod test_cli;
mod test_docs;
mod test_featurize;
mod test_fuzz;
mod test_gpu;
mod test_index;
mod test_layout;
mod test_parity;
mod test_parts;
mod test_pca;
mod test_pca_merge;
mod test_s3;
mod test_s3s;
mod test_serve;
mod test_serve_hostile;
mod test_shards;
mod test_trained;
mod test_weights;
