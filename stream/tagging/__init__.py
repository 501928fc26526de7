"""The torch-free tagging core: text rules, spans, tokenisation, lexicon, CRF, decoding, taxonomy,
bundles and the loaded pipeline. Training, export and the service import it; it imports none of them."""
