// The 3D view of a project: GLB scenes from the visualization service, drawn with three.js.
// Orbit (left drag), zoom (wheel), pan (right drag); fit() frames everything shown.
import { AmbientLight, Box3, Color, DirectionalLight, PerspectiveCamera, Scene, Vector3,
         WebGLRenderer } from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(window.devicePixelRatio);
    this.scene = new Scene();
    this.scene.background = new Color(0xf0f2f5);
    this.scene.add(new AmbientLight(0xffffff, 0.6));
    const sun = new DirectionalLight(0xffffff, 1.6);
    sun.position.set(3, 5, 4);
    this.scene.add(sun);
    this.camera = new PerspectiveCamera(45, 1, 0.01, 1000);
    this.camera.up.set(0, 0, 1);  // CAD's z is up
    this.camera.position.set(4, -5, 3);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener("change", () => this.draw());
    this.model = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.canvas;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.draw();
  }

  async show(glb) {
    const loaded = await new GLTFLoader().parseAsync(glb, "");
    this.remove();
    this.model = loaded.scene;
    this.scene.add(this.model);
    this.fit();
  }

  clear() {
    this.remove();
    this.draw();
  }

  // The shown model leaves the scene and frees its GPU buffers (each reopen loads a new one).
  remove() {
    if (!this.model) return;
    this.scene.remove(this.model);
    this.model.traverse((node) => {
      node.geometry?.dispose();
      for (const material of [node.material].flat()) material?.dispose();
    });
    this.model = null;
  }

  parts() {
    const names = [];
    this.model?.traverse((node) => { if (node.isMesh) names.push(node.name); });
    return names;
  }

  fit() {
    if (!this.model) return;
    const box = new Box3().setFromObject(this.model);
    const center = box.getCenter(new Vector3());
    const radius = box.getSize(new Vector3()).length() / 2 || 1;
    const distance = radius / Math.sin((this.camera.fov * Math.PI) / 360);
    const direction = this.camera.position.clone().sub(this.controls.target).normalize();
    this.controls.target.copy(center);
    this.camera.position.copy(center).addScaledVector(direction, distance);
    this.camera.near = distance / 100;
    this.camera.far = distance * 100;
    this.camera.updateProjectionMatrix();
    this.controls.update();
    this.draw();
  }

  draw() { this.renderer.render(this.scene, this.camera); }
}
