"""Data: where tweets come from (sources), what a tweet is (tweets), handles, cleaning."""
