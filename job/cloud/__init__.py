"""Cloud: storage (S3 or a folder), published runs, status records, the Hub, submitting."""
