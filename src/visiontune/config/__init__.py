"""params.yaml's schema, the pipeline's paths and the one error type: what every other
package builds on."""
