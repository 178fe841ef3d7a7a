"""The pure core: manifest -> plan -> shards, records -> summary -> status, and every decision in between."""
