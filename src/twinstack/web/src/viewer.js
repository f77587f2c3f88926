// The 3D view of a project: GLB scenes from the visualization service, drawn with three.js.
// Orbit (left drag), zoom (wheel), pan (right drag or arrow keys); fit() frames everything
// shown; a click picks a part; a section plane cuts everything along x, y or z.
import { AmbientLight, Box3, Color, DirectionalLight, DoubleSide, PerspectiveCamera, Plane,
         Raycaster, Scene, Vector2, Vector3, WebGLRenderer } from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";

const AXES = { x: new Vector3(-1, 0, 0), y: new Vector3(0, -1, 0), z: new Vector3(0, 0, -1) };
const SELECTED = new Color(0xff8c1a);

// One per page (its canvas keeps its WebGL context and listeners): each opened project sets
// `onPick` to hear which part a click picked.
export class Viewer {
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(window.devicePixelRatio);
    this.renderer.localClippingEnabled = true;
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
    this.controls.listenToKeyEvents(canvas);  // arrows pan the focused view
    this.model = null;
    this.selected = new Set();
    this.section = null;  // {axis, plane} while a section plane cuts the view
    this.onPick = () => undefined;
    this.pickOnClick();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  // A click that is not the end of a drag picks the part under the pointer (or nothing).
  pickOnClick() {
    let down = null;
    this.canvas.addEventListener("pointerdown", (e) => { down = [e.clientX, e.clientY]; });
    this.canvas.addEventListener("pointerup", (e) => {
      if (!down || Math.hypot(e.clientX - down[0], e.clientY - down[1]) > 4) return;
      this.onPick(this.partAt(e.clientX, e.clientY), e.ctrlKey || e.shiftKey || e.metaKey);
    });
  }

  partAt(clientX, clientY) {
    if (!this.model) return null;
    const box = this.canvas.getBoundingClientRect();
    const pointer = new Vector2(((clientX - box.left) / box.width) * 2 - 1,
                                -((clientY - box.top) / box.height) * 2 + 1);
    const ray = new Raycaster();
    ray.setFromCamera(pointer, this.camera);
    const clip = this.section?.plane;
    const hit = ray.intersectObject(this.model, true).find((h) => h.object.isMesh
      && h.object.visible && (!clip || clip.distanceToPoint(h.point) >= 0));
    return hit ? hit.object.name : null;
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.canvas;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.draw();
  }

  async show(glb, { fit = false } = {}) {
    const loaded = await new GLTFLoader().parseAsync(glb, "");
    const first = !this.model;
    this.remove();
    this.model = loaded.scene;
    this.model.traverse((node) => {
      if (!node.isMesh) return;
      node.material = node.material.clone();  // each part is coloured on its own when picked
      node.material.side = DoubleSide;  // the inside shows where the section plane cuts
      node.userData.color = node.material.color.clone();
    });
    this.scene.add(this.model);
    this.applySection();
    this.select([...this.selected]);
    if (fit || first) this.fit(); else this.draw();
  }

  clear() {
    this.remove();
    this.draw();
  }

  // The shown model leaves the scene and frees its GPU buffers (each redraw loads a new one).
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

  select(names) {
    this.selected = new Set(names);
    this.model?.traverse((node) => {
      if (!node.isMesh) return;
      node.material.color.copy(this.selected.has(node.name) ? SELECTED : node.userData.color);
    });
    this.draw();
  }

  // Cut the view at `fraction` (0..1) of the model's extent along `axis`, keeping the part
  // below; axis null removes the cut.
  setSection(axis, fraction) {
    this.section = axis ? { axis, fraction, plane: new Plane(AXES[axis].clone(), 0) } : null;
    this.applySection();
    this.draw();
  }

  applySection() {
    const planes = [];
    if (this.section && this.model) {
      const box = new Box3().setFromObject(this.model);
      const { axis, fraction, plane } = this.section;
      plane.constant = box.min[axis] + fraction * (box.max[axis] - box.min[axis]);
      planes.push(plane);
    }
    this.model?.traverse((node) => {
      if (node.material) node.material.clippingPlanes = planes;
    });
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
