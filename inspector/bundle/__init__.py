"""A model bundle: what it is, read, checked and signed in one place.

A bundle is a folder holding
- `model_card.json` (`CARD_NAME`): the card, one typed schema (`card.ModelCard`): task, classes, input,
  thresholds, the files and their sha256s, the drift guard's envelope (`envelope.Envelope`), free-form
  provenance records (quantization, training, evaluation, lineage);
- `model_card.sig` (`SIG_NAME`, optional): a signature over the card's exact bytes (`signing`), which
  therefore vouches for every file the card names;
- the OpenVINO IR of each precision the card lists under `files` (`<stem>.xml` + `<stem>.bin`).

Modules: `card` (the schema, read/write), `envelope` (the guard's envelope data model), `hashing` (the
sha256 of model files: every model-file hash goes through it), `signing` (`Trust`, `verify_card`,
`BundleRefused`), `verify` (the one check a bundle passes: card, signature, each file hashed once),
`ir` (what an IR says about itself: labels, input size, channels), `load` (`load_bundle`, `ModelBundle`:
the runtime's view of a checked bundle).

This package sits right above the kernel: it imports nothing of inference/, lifecycle/ or service/.
"""

CARD_NAME = "model_card.json"
SIG_NAME = "model_card.sig"
