//! cargo run --release -p ch01-naive --example generate -- "ROMEO:" 64

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ch00_model::checkpoint::example_main(&mut ch01_naive::NaiveEngine)
}
