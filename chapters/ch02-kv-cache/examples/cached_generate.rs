//! cargo run --release -p ch02-kv-cache --example cached_generate -- "ROMEO:" 64

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (text, summary) = ch00_serving::generate::example_run(&mut ch02_kv_cache::KvCacheEngine::default())?;
    println!("{text}");
    eprintln!("{summary}");
    Ok(())
}
