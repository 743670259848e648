//! cargo run --release -p ch01-naive --example naive_generate -- "ROMEO:" 64

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (text, summary) = ch00_serving::generate::example_run(&mut ch01_naive::NaiveEngine)?;
    println!("{text}");
    eprintln!("{summary}");
    Ok(())
}
