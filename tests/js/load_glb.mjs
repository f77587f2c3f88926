// Parse a GLB with three.js's own GLTFLoader (what the browser runs) and print what it built as
// JSON: meshes, line sets and node names (three.js's and the file's). Exits 1 when the file does not parse.
// Usage: node load_glb.mjs FILE.glb
//
// No DOM globals are defined: GLTFLoader touches `self`, `document` and image decoders only
// for textures (images), and twinstack's GLB has none; so a file that needed them would fail
// here loudly instead of passing on a stub.
import { readFileSync } from 'node:fs';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';

const path = process.argv[2];
if (!path) {
  console.error('usage: node load_glb.mjs FILE.glb');
  process.exit(2);
}
const bytes = readFileSync(path);
const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);

function describe(gltf) {
  const meshes = [];
  const lines = [];
  const nodes = [];
  gltf.scene.traverse((obj) => {
    if (obj !== gltf.scene) nodes.push(obj.name);
    const geometry = obj.geometry;
    if (!geometry) return;
    const position = geometry.getAttribute('position');
    const vertices = position ? position.count : 0;
    const material = Array.isArray(obj.material) ? obj.material[0] : obj.material;
    const colour = material && material.color ? material.color.toArray() : null;
    if (obj.isLineSegments) {
      const count = geometry.index ? geometry.index.count : vertices;
      lines.push({ name: obj.name, segments: count / 2, color: colour });
    } else if (obj.isMesh) {
      const normal = geometry.getAttribute('normal');
      meshes.push({
        name: obj.name,
        vertices,
        triangles: (geometry.index ? geometry.index.count : vertices) / 3,
        normals: Boolean(normal) && normal.count === vertices,
        color: colour,
        opacity: material ? material.opacity : null,
        transparent: material ? material.transparent : null,
      });
    }
  });
  // the names as written in the file (three.js sanitises the node names it builds)
  const gltfNodes = (gltf.parser.json.nodes || []).map((node) => node.name);
  return { meshes, lines, nodes, gltf_nodes: gltfNodes };
}

function fail(error) {
  console.error(`GLTFLoader could not parse ${path}: ${error && error.message ? error.message : error}`);
  process.exit(1);
}

try {  // parse throws on a bad header; errors further in reach onError
  new GLTFLoader().parse(
    buffer,
    '',
    (gltf) => process.stdout.write(JSON.stringify(describe(gltf)) + '\n'),
    fail,
  );
} catch (error) {
  fail(error);
}
