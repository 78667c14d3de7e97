"""The tag amidsl puts on every image it registers or copies, so that it can find the images it built."""

BUILT_BY_TAG = "amidsl:built-by"
BUILT_BY_VALUE = "amidsl"
