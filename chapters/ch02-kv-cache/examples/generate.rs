//! cargo run --release -p ch02-kv-cache --example generate -- "ROMEO:" 64

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ch00_model::checkpoint::example_main(&mut ch02_kv_cache::KvCacheEngine::default())
}
