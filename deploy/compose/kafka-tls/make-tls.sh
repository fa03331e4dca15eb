#!/usr/bin/env bash
# TLS material and broker credentials for the secured compose variant (compose.secured.yaml),
# made once by its one-shot `kafka-tls` service (apache/kafka image: keytool from its JDK)
# and kept in volumes; a second run changes nothing. Delete the volumes to start over.
#
#   $CA_DIR      the CA's key (only this service mounts it)           kafka-tls-ca volume
#   $TLS_DIR     per broker a PKCS12 keystore (kafka-N.p12), its      kafka-tls volume, the
#                password (keystore-password), the CA (ca.pem), the   brokers' /etc/kafka/secrets
#                brokers' own SCRAM login (broker_jaas.conf) and a
#                client config for the healthcheck and kafka-init
#                (client.properties)
#   $PUBLIC_DIR  ca.pem alone, for flashgate's clients                 kafka-ca volume
#
# Broker certificates name the broker's compose host name and localhost (the
# healthcheck), for server and client use. Passwords are 48 hex digits.
set -euo pipefail

CA_DIR=${CA_DIR:-/var/lib/kafka-ca}
TLS_DIR=${TLS_DIR:-/etc/kafka/secrets}
PUBLIC_DIR=${PUBLIC_DIR:-/etc/kafka-ca}
BROKERS=${BROKERS:-kafka-1 kafka-2 kafka-3}
VALID_DAYS=${VALID_DAYS:-825}
# Who runs the brokers (the image's appuser); files are handed to it when run as root.
OWNER=${OWNER:-appuser}
MECHANISM=SCRAM-SHA-512

umask 077
mkdir -p "$CA_DIR" "$TLS_DIR" "$PUBLIC_DIR"

random_hex() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

if [[ ! -s "$TLS_DIR/keystore-password" ]]; then
  random_hex > "$TLS_DIR/keystore-password"
fi
store_password=$(cat "$TLS_DIR/keystore-password")

if [[ ! -s "$CA_DIR/ca.p12" ]]; then
  echo "kafka-tls: new CA"
  keytool -genkeypair -alias ca -dname "CN=flashgate compose Kafka CA" -keyalg RSA \
    -keysize 2048 -validity "$VALID_DAYS" -ext bc:c -keystore "$CA_DIR/ca.p12" \
    -storetype PKCS12 -storepass "$store_password"
fi
keytool -exportcert -rfc -alias ca -keystore "$CA_DIR/ca.p12" -storepass "$store_password" \
  -file "$TLS_DIR/ca.pem"

for broker in $BROKERS; do
  keystore="$TLS_DIR/$broker.p12"
  if [[ -s "$keystore" ]]; then
    continue
  fi
  echo "kafka-tls: certificate for $broker"
  san="SAN=dns:$broker,dns:localhost"
  keytool -genkeypair -alias "$broker" -dname "CN=$broker" -keyalg RSA -keysize 2048 \
    -validity "$VALID_DAYS" -ext "$san" -keystore "$keystore.new" -storetype PKCS12 \
    -storepass "$store_password"
  keytool -certreq -alias "$broker" -keystore "$keystore.new" -storepass "$store_password" \
    -file "$TLS_DIR/$broker.csr"
  keytool -gencert -alias ca -keystore "$CA_DIR/ca.p12" -storepass "$store_password" \
    -infile "$TLS_DIR/$broker.csr" -outfile "$TLS_DIR/$broker.pem" -rfc \
    -validity "$VALID_DAYS" -ext "$san" -ext EKU=serverAuth,clientAuth
  keytool -importcert -noprompt -alias ca -file "$TLS_DIR/ca.pem" \
    -keystore "$keystore.new" -storepass "$store_password"
  keytool -importcert -alias "$broker" -file "$TLS_DIR/$broker.pem" \
    -keystore "$keystore.new" -storepass "$store_password"
  rm -f "$TLS_DIR/$broker.csr" "$TLS_DIR/$broker.pem"
  mv "$keystore.new" "$keystore"
done

# The brokers' own SCRAM user, for inter-broker connections, the healthcheck and kafka-init.
if [[ ! -s "$TLS_DIR/broker-password" ]]; then
  random_hex > "$TLS_DIR/broker-password"
fi
broker_password=$(cat "$TLS_DIR/broker-password")
login="org.apache.kafka.common.security.scram.ScramLoginModule required"
login="$login username=\"broker\" password=\"$broker_password\";"
printf 'KafkaServer {\n  %s\n};\n' "$login" > "$TLS_DIR/broker_jaas.conf"
cat > "$TLS_DIR/client.properties" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=$MECHANISM
sasl.jaas.config=$login
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
PROPERTIES

cp "$TLS_DIR/ca.pem" "$PUBLIC_DIR/ca.pem"
chmod 0644 "$PUBLIC_DIR/ca.pem"
chmod 0755 "$PUBLIC_DIR"
if [[ $(id -u) -eq 0 ]]; then
  chown -R "$OWNER:$OWNER" "$TLS_DIR"
fi
echo "kafka-tls: ready (CA $PUBLIC_DIR/ca.pem)"
