<?php
// Class loading without Composer: generated code in gen/ (NotifyAgent\V1,
// Google\Rpc and their GPBMetadata), the protobuf runtime from Debian's
// php-google-protobuf (/usr/share/php), and the grpc extension's PHP library
// (src/php/lib/Grpc of the same grpc source) from GRPC_PHP_LIB.
spl_autoload_register(function (string $class): void {
    $roots = [__DIR__ . '/gen', '/usr/share/php'];
    if (str_starts_with($class, 'Grpc\\')) {
        $roots = [(string) getenv('GRPC_PHP_LIB')];
    }
    foreach ($roots as $root) {
        $file = $root . '/' . str_replace('\\', '/', $class) . '.php';
        if (is_file($file)) {
            require $file;
            return;
        }
    }
});
