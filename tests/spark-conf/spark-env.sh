# Sourced by Spark's launch scripts (SPARK_CONF_DIR is this directory in tests): the
# standalone cluster's master and worker get the JVM options of spark-defaults.conf.
SPARK_DAEMON_JAVA_OPTS="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
